#!/usr/bin/python3
"""Regenerate Sources/Cryo/Inspect/SchemaTable.swift, the schema table behind
`cryo show/decode/encode`.

Run with the *system* python (it needs Debian's python3-protobuf and pycriu):

    /usr/bin/python3 Scripts/gen-inspect-schema.py

Why a table: crit's JSON is driven by protobuf descriptors (field names, types,
enum names) *and* by CRIU's custom field options `(criu).hex/ipadd/flags/dev/
odev/dict/conv`, which Scripts/gen-protos.py strips from the generated Swift
code. Swift cannot recover either at run time, so this script reads pycriu's
compiled descriptors (the source of truth crit itself uses), adds the fields in
gen-protos.py's NEWER_CRIU_FIELDS (marked `new`) and the messages of its
NEWER_CRIU_MESSAGES, and writes them as a compact
text table inside a Swift string literal (a large array literal would make the
Swift type checker slow; the text is parsed once, on first use).

Table lines (whitespace-separated):
  M <message full name>
  F <number> <name> <label> <type> [<message or enum full name>] [options...]
      label: required|optional|repeated; type: int32 int64 uint32 uint64
      sint32 sint64 fixed32 fixed64 sfixed32 sfixed64 bool string bytes enum
      message; options: hex ipadd flags=<map> dev odev dict=<map> conv=<conv>
      packed new
  E <enum full name>
  V <number> <name>
  H <magic name> <kind> [<message>] [<extra>]
      kind: entries|pagemap|ghost; extra: pipes_data sk_queues tcp_stream
      bpfmap_data ipc_sem ipc_msg ipc_shm
"""

import importlib.util
import os
import sys

sys.path.insert(0, "/usr/lib/python3/dist-packages")
from google.protobuf.descriptor import FieldDescriptor as FD  # noqa: E402
import pycriu.images.images as images  # noqa: E402
import pycriu.images.opts_pb2 as opts_pb2  # noqa: E402
import pycriu.images.pb as pb  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
OUT = os.path.join(REPO, "Sources", "Cryo", "Inspect", "SchemaTable.swift")

spec = importlib.util.spec_from_file_location("gen_protos", os.path.join(REPO, "Scripts", "gen-protos.py"))
gen_protos = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gen_protos)

TYPES = {
    FD.TYPE_INT32: "int32", FD.TYPE_INT64: "int64", FD.TYPE_UINT32: "uint32",
    FD.TYPE_UINT64: "uint64", FD.TYPE_SINT32: "sint32", FD.TYPE_SINT64: "sint64",
    FD.TYPE_FIXED32: "fixed32", FD.TYPE_FIXED64: "fixed64", FD.TYPE_SFIXED32: "sfixed32",
    FD.TYPE_SFIXED64: "sfixed64", FD.TYPE_BOOL: "bool", FD.TYPE_STRING: "string",
    FD.TYPE_BYTES: "bytes", FD.TYPE_ENUM: "enum", FD.TYPE_MESSAGE: "message",
}
LABELS = {FD.LABEL_REQUIRED: "required", FD.LABEL_OPTIONAL: "optional", FD.LABEL_REPEATED: "repeated"}

messages = {}
enums = {}


def collect(desc):
    if desc.full_name in messages:
        return
    messages[desc.full_name] = desc
    for e in desc.enum_types:
        enums[e.full_name] = e
    for n in desc.nested_types:
        collect(n)
    for f in desc.fields:
        if f.message_type is not None:
            collect(f.message_type)
        if f.enum_type is not None:
            enums[f.enum_type.full_name] = f.enum_type


for name in sorted(dir(pb)):
    obj = getattr(pb, name)
    d = getattr(obj, "DESCRIPTOR", None)
    if d is not None and hasattr(d, "fields"):
        collect(d)
    elif d is not None and hasattr(d, "values_by_number"):
        enums[d.full_name] = d

new_fields = {}
for entries in gen_protos.NEWER_CRIU_FIELDS.values():
    for msg_path, label, type_, field_name, number, _note in entries:
        new_fields.setdefault(msg_path, []).append((number, field_name, label, type_))
# Messages crit does not know, as field lists (only the fields that use them are marked new).
new_messages = {msg: fields for entries in gen_protos.NEWER_CRIU_MESSAGES.values()
                for msg, fields, _note in entries}


def options(f):
    o = f.GetOptions().Extensions[opts_pb2.criu]
    out = []
    if o.hex:
        out.append("hex")
    if o.ipadd:
        out.append("ipadd")
    if o.flags:
        out.append("flags=" + o.flags)
    if o.dev:
        out.append("dev")
    if o.odev:
        out.append("odev")
    if o.dict:
        out.append("dict=" + o.dict)
    if o.conv:
        out.append("conv=" + o.conv)
    if f.GetOptions().packed:
        out.append("packed")
    return out


lines = []
for full in sorted(set(messages) | set(new_messages)):
    lines.append("M " + full)
    if full in new_messages:
        for label, type_, name, number in sorted(new_messages[full], key=lambda x: x[3]):
            lines.append(" ".join(["F", str(number), name, label, type_]))
        continue
    m = messages[full]
    fields = [(f.number, f) for f in m.fields]
    for number, f in sorted(fields, key=lambda x: x[0]):
        parts = ["F", str(number), f.name, LABELS[f.label], TYPES[f.type]]
        if f.type == FD.TYPE_MESSAGE:
            parts.append(f.message_type.full_name)
        elif f.type == FD.TYPE_ENUM:
            parts.append(f.enum_type.full_name)
        lines.append(" ".join(parts + options(f)))
    for number, name, label, type_ in sorted(new_fields.get(full, [])):
        kind = ["message", type_] if type_ in new_messages else [type_]
        lines.append(" ".join(["F", str(number), name, label] + kind + ["new"]))
for full in sorted(enums):
    lines.append("E " + full)
    for v in sorted(enums[full].values, key=lambda v: v.number):
        lines.append("V %d %s" % (v.number, v.name))

EXTRAS = {
    "pipes_data_extra_handler": "pipes_data", "sk_queues_extra_handler": "sk_queues",
    "tcp_stream_extra_handler": "tcp_stream", "bpfmap_data_extra_handler": "bpfmap_data",
    "ipc_sem_set_handler": "ipc_sem", "ipc_msg_queue_handler": "ipc_msg", "ipc_shm_handler": "ipc_shm",
}
for magic in sorted(images.handlers):
    h = images.handlers[magic]
    if isinstance(h, images.pagemap_handler):
        lines.append("H %s pagemap pagemap_head" % magic)
    elif isinstance(h, images.ghost_file_handler):
        lines.append("H %s ghost ghost_file_entry" % magic)
    else:
        extra = EXTRAS[type(h.extra_handler).__name__] if h.extra_handler else ""
        lines.append(("H %s entries %s %s" % (magic, h.payload.DESCRIPTOR.full_name, extra)).rstrip())

with open(OUT, "w") as out:
    out.write("""// GENERATED by Scripts/gen-inspect-schema.py from pycriu's descriptors (Debian criu 3.17)
// plus gen-protos.py's NEWER_CRIU_FIELDS -- DO NOT EDIT. See that script for the format.

extension CriuSchema {
    /// Every CRIU image message and enum with its fields, crit's `(criu)` field options, and
    /// crit's image handlers, as text parsed once by ``CriuSchema/shared``.
    static let table = \"\"\"
""")
    for line in lines:
        out.write(line + "\n")
    out.write("\"\"\"\n}\n")
print("wrote %s: %d lines" % (OUT, len(lines)))
