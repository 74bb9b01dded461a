#!/usr/bin/env python3
"""Writes controller/src/http/schemas.json.gz: for each kind Shoal serves, the OpenAPI schema of
the fields it honours (tests/data/honoured-fields.txt), with Kubernetes' own descriptions
and types from the official Python client's models. The HTTPS door serves them in its
OpenAPI v3 documents, so `kubectl explain` describes what Shoal does, field by field.

    python3 -m venv /tmp/k8s && /tmp/k8s/bin/pip install kubernetes
    /tmp/k8s/bin/python tests/data/k8s_schemas.py | gzip -9n > controller/src/http/schemas.json.gz
"""
import json
import os
import re
import kubernetes.client as client

HERE = os.path.dirname(os.path.abspath(__file__))
# A workload's pod template is the Pod's, listed once under Pod.
TEMPLATES = {"Deployment", "ReplicaSet", "DaemonSet", "Job"}
SCALARS = {"str": {"type": "string"}, "int": {"type": "integer"}, "bool": {"type": "boolean"},
           "float": {"type": "number"}, "datetime": {"type": "string", "format": "date-time"},
           "bytearray": {"type": "string", "format": "byte"},
           "bytes": {"type": "string", "format": "byte"},
           "object": {"x-kubernetes-int-or-string": True}}


def patch_meta(path):
    """Kubernetes' strategic-merge extensions for the field at `path` (dotted JSON names):
    kubectl computes its apply patches from them, so they match what the server merges by
    (api/src/patch.rs, merge_key)."""
    field = path.split(".")[-1]
    in_container = "ontainers" in path
    keys = {"containers": "name", "initContainers": "name", "ephemeralContainers": "name",
            "volumes": "name", "imagePullSecrets": "name", "volumeMounts": "mountPath",
            "volumeDevices": "devicePath", "hostAliases": "ip", "ownerReferences": "uid",
            "conditions": "type", "topologySpreadConstraints": "topologyKey"}
    if field == "env" and in_container:
        return {"x-kubernetes-patch-merge-key": "name", "x-kubernetes-patch-strategy": "merge"}
    if field == "ports":
        key = "containerPort" if in_container else "port"
        return {"x-kubernetes-patch-merge-key": key, "x-kubernetes-patch-strategy": "merge"}
    if field in keys:
        strategy = "merge,retainKeys" if field == "volumes" else "merge"
        return {"x-kubernetes-patch-merge-key": keys[field], "x-kubernetes-patch-strategy": strategy}
    if path == "metadata.finalizers":
        return {"x-kubernetes-patch-strategy": "merge"}
    if path.endswith("spec.strategy") or path.endswith("spec.updateStrategy"):
        return {"x-kubernetes-patch-strategy": "retainKeys"}
    return {}


def honoured():
    out = {}
    with open(os.path.join(HERE, "honoured-fields.txt")) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            kind, path = line.split()
            out.setdefault(kind, []).append(path)
    return out


def leaf_or_model(typ):
    """The schema of a type name, and the model class if it is one."""
    m = re.fullmatch(r"(?:list|List)\[(.*)\]", typ)
    if m:
        return "list", m.group(1)
    m = re.fullmatch(r"(?:dict|Dict)\((?:str), (.*)\)|Dict\[str, (.*)\]", typ)
    if m:
        return "map", m.group(1) or m.group(2)
    if typ in SCALARS:
        return "scalar", typ
    return "model", typ


def field_of(model, name):
    cls = getattr(client, model)
    for attr, json_name in cls.attribute_map.items():
        if json_name == name:
            desc = next((f.description for k, f in cls.model_fields.items()
                         if k == attr or f.alias == json_name or k.lstrip("_") == attr.lstrip("_")
                         or k == "var" + attr), "")
            return cls.openapi_types[attr], desc or ""
    raise KeyError(f"{model} has no field {name}")


def model_doc(model):
    doc = (getattr(client, model).__doc__ or "").strip().split("\n\n")[0]
    return " ".join(doc.split())


def node_for(typ, desc):
    shape, inner = leaf_or_model(typ)
    node = {"description": desc}
    if shape == "scalar":
        node.update(SCALARS[inner])
    elif shape == "model":
        node.update({"type": "object", "properties": {}, "model": inner})
        if not desc:
            # A field of a model's type carries no description of its own in the client:
            # the model's says what it is.
            node["description"] = model_doc(inner)
    elif shape == "list":
        node["type"] = "array"
        node["items"] = node_for(inner, "")
    else:
        node["type"] = "object"
        node["additionalProperties"] = node_for(inner, "")
    return node


def add(root, path):
    node = root
    dotted = []
    for seg in path.split("/"):
        name = seg.rstrip("[]{}")
        dotted.append(name)
        props = node.setdefault("properties", {})
        if name not in props:
            typ, desc = field_of(node["model"], name)
            props[name] = node_for(typ, desc)
            props[name].update(patch_meta(".".join(dotted)))
        node = props[name]
        # Step through lists and maps to the element the rest of the path is about.
        while seg.endswith("[]") or seg.endswith("{}"):
            node = node["items"] if seg.endswith("[]") else node["additionalProperties"]
            seg = seg[:-2]


def strip(node):
    node.pop("model", None)
    for child in list(node.get("properties", {}).values()):
        strip(child)
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            strip(node[key])
    if node.get("properties") == {} and node.get("type") == "object":
        del node["properties"]
    if not node.get("description"):
        node.pop("description", None)
    return node


def main():
    fields = honoured()
    schemas = {}
    for kind, paths in fields.items():
        model = "V1" + kind
        root = {"type": "object", "description": model_doc(model),
                "model": model, "properties": {}}
        for name in ("apiVersion", "kind"):
            typ, desc = field_of(model, name)
            root["properties"][name] = node_for(typ, desc)
        for path in paths:
            if kind in TEMPLATES and path == "spec/template":
                for pod_path in fields["Pod"]:
                    add(root, "spec/template/" + pod_path)
            else:
                add(root, path)
        schemas[kind] = strip(root)
    json.dump(schemas, os.sys.stdout, separators=(",", ":"), sort_keys=True)


main()
