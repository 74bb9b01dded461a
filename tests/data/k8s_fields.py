#!/usr/bin/env python3
"""Writes k8s-fields.txt: every field a user may write in the kinds Shoal serves for apply,
as Kubernetes' own schema has them (the models of the official Python client, whose
version is printed on the first line). One line per field: its path (JSON names, `[]` for
a list's element, `{}` for a map's value) and its type.

    python3 -m venv /tmp/k8s && /tmp/k8s/bin/pip install kubernetes
    /tmp/k8s/bin/python tests/data/k8s_fields.py > tests/data/k8s-fields.txt

Status, and the fields the API server writes into metadata, are left out: a manifest does
not set them.
"""
import re
import kubernetes
import kubernetes.client as client

KINDS = ["Namespace", "Pod", "ReplicaSet", "Deployment", "DaemonSet", "Job", "Service",
         "ConfigMap", "Secret", "PersistentVolumeClaim", "PersistentVolume", "StorageClass",
         "CronJob", "NetworkPolicy"]
SERVER_WRITTEN = {"creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                  "generation", "managedFields", "resourceVersion", "selfLink", "uid"}
LEAVES = {"str": "str", "int": "int", "bool": "bool", "datetime": "datetime",
          "object": "object", "float": "float", "bytearray": "str", "bytes": "str"}


def walk(model, path, seen, out):
    cls = getattr(client, model)
    for attr, typ in sorted(cls.openapi_types.items()):
        name = cls.attribute_map[attr]
        if not path and name in ("apiVersion", "kind", "status"):
            continue
        if path == ["metadata"] and name in SERVER_WRITTEN:
            continue
        field(typ, path + [name], seen, out)


def field(typ, path, seen, out):
    m = re.fullmatch(r"(?:list|List)\[(.*)\]", typ)
    if m:
        path = path[:-1] + [path[-1] + "[]"]
        return field(m.group(1), path, seen, out)
    m = re.fullmatch(r"(?:dict|Dict)\((?:str|str), (.*)\)|Dict\[str, (.*)\]", typ)
    if m:
        inner = m.group(1) or m.group(2)
        if inner in LEAVES:
            out.append(("/".join(path), "map"))
            return
        return field(inner, path[:-1] + [path[-1] + "{}"], seen, out)
    if typ in LEAVES:
        out.append(("/".join(path), LEAVES[typ]))
        return
    if typ in seen:  # a recursive schema (JSONSchemaProps): once is enough
        return
    out.append(("/".join(path), "object"))
    walk(typ, path, seen | {typ}, out)


print(f"# kubernetes python client {kubernetes.__version__}")
for kind in KINDS:
    out = []
    walk("V1" + kind, [], set(), out)
    for path, typ in out:
        print(f"{kind}\t{path}\t{typ}")
