#!/usr/bin/env python3
"""Writes controller/src/http/protobuf.json.gz: the protobuf wire layout of the kinds Shoal
serves (core/v1, apps/v1, batch/v1, policy/v1 of Kubernetes' API), so the HTTPS door decodes
the bodies kubectl's typed clients send as protobuf into the JSON the rest of the door reads.

For each message: its fields as [number, JSON name, type, repeated, pointer]. The type is a
scalar (string, bytes, int, bool, double), one of apimachinery's well-known messages (Time,
MicroTime, Quantity, IntOrString, Duration, RawExtension), `map:<value type>`, or another
message's name. `pointer` says the Go field is a pointer: only then does a zero value on the
wire mean "set to zero" rather than "not set" (gogo writes every non-pointer scalar).

The field numbers and types come from `generated.proto` and pointer-ness from `types.go` of
github.com/kubernetes/api (a checkout given as the first argument):

    python3 tests/data/k8s_protobuf.py /path/to/kubernetes/api | gzip -9n > controller/src/http/protobuf.json.gz

apimachinery's meta/v1 messages (ObjectMeta, LabelSelector, DeleteOptions, ...) are described
in controller/src/http/protobuf.rs itself.
"""
import json
import re
import subprocess
import sys

GROUPS = ["core/v1", "apps/v1", "batch/v1", "policy/v1"]
SCALARS = {"string": "string", "bytes": "bytes", "int32": "int", "int64": "int", "bool": "bool",
           "double": "double", "float": "double"}
WELL_KNOWN = {
    "k8s.io.apimachinery.pkg.apis.meta.v1.Time": "Time",
    "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime": "MicroTime",
    "k8s.io.apimachinery.pkg.api.resource.Quantity": "Quantity",
    "k8s.io.apimachinery.pkg.util.intstr.IntOrString": "IntOrString",
    "k8s.io.apimachinery.pkg.apis.meta.v1.Duration": "Duration",
    "k8s.io.apimachinery.pkg.runtime.RawExtension": "RawExtension",
}
META = "k8s.io.apimachinery.pkg.apis.meta.v1."


def show(repo, path):
    return subprocess.run(["git", "-C", repo, "show", f"HEAD:{path}"], check=True,
                          capture_output=True, text=True).stdout


def type_of(t):
    t = t.lstrip(".")
    if t in SCALARS:
        return SCALARS[t]
    if t in WELL_KNOWN:
        return WELL_KNOWN[t]
    if t.startswith(META):
        return "meta." + t[len(META):]
    # A message of a served group: by its bare name (names do not clash across them).
    return t.rsplit(".", 1)[-1]


def pointers(types_go):
    """{struct: {json name: is a pointer}} from Go sources."""
    out, current = {}, None
    for line in types_go.splitlines():
        m = re.match(r"^type (\w+) struct \{", line)
        if m:
            current = out.setdefault(m.group(1), {})
            continue
        if line.startswith("}"):
            current = None
            continue
        m = re.match(r"^\s+\w+\s+(\S+)\s+`.*protobuf:\"[^\"]*name=(\w+)", line)
        if current is not None and m:
            current[m.group(2)] = m.group(1).startswith("*")
    return out


def messages(proto, ptrs):
    out = {}
    for m in re.finditer(r"^message (\w+) \{\n(.*?)^\}", proto, re.S | re.M):
        name, body = m.group(1), m.group(2)
        fields = []
        for f in re.finditer(r"^\s+(optional|repeated) ([\w.]+) (\w+) = (\d+);", body, re.M):
            kind, typ, fname, num = f.groups()
            fields.append([int(num), fname, type_of(typ), kind == "repeated",
                           ptrs.get(name, {}).get(fname, False)])
        for f in re.finditer(r"^\s+map<string, ([\w.]+)> (\w+) = (\d+);", body, re.M):
            typ, fname, num = f.groups()
            fields.append([int(num), fname, "map:" + type_of(typ), False, False])
        out[name] = sorted(fields)
    return out


def main():
    repo = sys.argv[1]
    layout = {}
    for group in GROUPS:
        ptrs = {}
        for go in ("types.go",):
            ptrs.update(pointers(show(repo, f"{group}/{go}")))
        layout.update(messages(show(repo, f"{group}/generated.proto"), ptrs))
    json.dump(layout, sys.stdout, separators=(",", ":"), sort_keys=True)


main()
