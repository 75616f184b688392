#!/usr/bin/python3
"""Regenerate Cryo's Swift bindings for CRIU's image schemas.

Run with the *system* python (it needs Debian's `python3-protobuf` and the
`criu` package's `pycriu` module, which a pyenv/venv python won't have):

    PROTOC_GEN_SWIFT=/path/to/protoc-gen-swift /usr/bin/python3 Scripts/gen-protos.py

Environment:
  PROTOC_GEN_SWIFT  (required) path to a protoc-gen-swift binary built from
                    the same swift-protobuf version as Package.swift pins
                    (1.39.0), e.g.
                      git clone https://github.com/apple/swift-protobuf /tmp/swift-protobuf
                      cd /tmp/swift-protobuf && git checkout 1.39.0
                      swift build -c release --product protoc-gen-swift
                      export PROTOC_GEN_SWIFT=/tmp/swift-protobuf/.build/release/protoc-gen-swift
  PROTOC            (optional) protoc binary, default `protoc` from PATH
                    (Debian's protobuf-compiler).
  PYCRIU_IMAGES     (optional) directory holding pycriu's *_pb2.py modules,
                    default /usr/lib/python3/dist-packages/pycriu/images.

Source of truth: the serialized FileDescriptorProto (`DESCRIPTOR`) embedded in
each pycriu `*_pb2` module, i.e. exactly the schemas the installed CRIU
(3.17 on Debian 12) compiled from its images/*.proto.

What it does:
  1. Loads every `*_pb2` module and parses its FileDescriptorProto.
  2. Drops `opts.proto` (CRIU's custom `(criu).hex/ipadd/flags/...` field
     options, which extend google.protobuf.FieldOptions and only steer crit's
     JSON pretty-printing), removes it from every file's imports and strips the
     `[(criu)...]` options from all fields. None of this affects the wire
     format: message names, field numbers, labels, types, defaults and enums
     are untouched.
  3. Adds the fields listed in NEWER_CRIU_FIELDS (fields newer CRIU writes
     that 3.17's descriptors lack; see that table), and the messages of
     NEWER_CRIU_MESSAGES they may have as type, to the stripped descriptors.
  4. Writes readable proto2 source for each file into
     Sources/Cryo/Image/Proto/schemas/<name>.proto; the added fields carry a
     trailing `// not in CRIU 3.17: ...` comment.
  5. Compiles that text with protoc and checks that the result is identical
     (field for field) to the stripped-and-extended descriptors of steps 2-3,
     so the .proto text is a faithful rendering.
  6. Renames every message/enum to UpperCamelCase (see swift_named()) and
     runs protoc with --descriptor_set_in=<those descriptors> and
     protoc-gen-swift (Visibility=Public) to write
     Sources/Cryo/Image/Proto/<name>.pb.swift.

Swift type names: CRIU's .proto files declare no package, and
protoc-gen-swift would keep a package-less message name verbatim (a Swift
type called `core_entry`). Step 6 therefore renames types the way protobuf-c
does for CRIU's C code: core_entry -> CoreEntry, user_x86_regs_entry ->
UserX86RegsEntry, vma_entry -> VmaEntry, fd_types -> FdTypes, nested
core_entry.march -> CoreEntry.March. Message names never appear on the wire,
so the encoding is unchanged. The schemas/*.proto text keeps CRIU's original
names (so it diffs cleanly against upstream images/*.proto); do not feed it to
protoc-gen-swift directly -- always regenerate with this script.

Old generated *.pb.swift and schemas/*.proto files are removed first, so the
output directory always mirrors the current pycriu schemas.
"""

import glob
import importlib
import os
import shutil
import subprocess
import sys
import tempfile

from google.protobuf import descriptor_pb2

REPO = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
PROTO_DIR = os.path.join(REPO, "Sources", "Cryo", "Image", "Proto")
SCHEMA_DIR = os.path.join(PROTO_DIR, "schemas")
PYCRIU_IMAGES = os.environ.get(
    "PYCRIU_IMAGES", "/usr/lib/python3/dist-packages/pycriu/images")
PROTOC = os.environ.get("PROTOC", "protoc")

# Files that are not image schemas and are dropped (see module docstring).
DROPPED_FILES = {"opts.proto"}

FDP = descriptor_pb2.FieldDescriptorProto

# Fields from newer CRIU (4.x) that 3.17's descriptors lack.
#
# pycriu 3.17 is the source of truth for everything else, but images written
# by a newer CRIU carry these fields too. Without them SwiftProtobuf would only
# keep them as unknown fields; with them Cryo can read them, and write them so
# that a newer CRIU restores them. Adding an optional/repeated field with a
# number the old schema does not use is wire-compatible in both directions:
# 3.17 (and crit 3.17) just skip it.
#
# Every entry must match upstream CRIU's images/<file> exactly (same number,
# label, type and name) -- never invent numbers here. Entries are applied by
# add_newer_criu_fields() after the (criu) options are stripped and before
# anything is rendered, so they appear in schemas/*.proto (marked with a
# `// not in CRIU 3.17` comment), take part in the text round-trip check, and
# reach the generated Swift. If a future pycriu already has a listed field with
# the same definition, the entry is skipped (and reported, so it can be
# deleted); a conflicting definition stops the script.
#
#   file -> [(message, label, scalar type, field name, field number, upstream)]
#
# `message` is the dotted name inside the file (e.g. "core_entry.march" for a
# nested message); `upstream` says where the field comes from in CRIU.
NEWER_CRIU_FIELDS = {
    "creds.proto": [
        ("creds_entry", "optional", "uint32", "no_new_privs", 18,
         "prctl(PR_SET_NO_NEW_PRIVS) state; checkpoint-restore/criu#2228"),
        ("creds_entry", "repeated", "uint32", "cap_amb", 19,
         "ambient capability set (CapAmb); checkpoint-restore/criu#2554"),
    ],
    "sk-inet.proto": [
        ("inet_sk_entry", "optional", "tcp_opts_entry", "tcp_opts", 20,
         "TCP-level options of a TCP socket (tcp_opts_entry); upstream images/sk-inet.proto"),
    ],
}

# Messages from newer CRIU that 3.17's schemas lack, for NEWER_CRIU_FIELDS of message type.
# Same rules: copied from upstream CRIU exactly, never invented.
#
#   file -> [(message, [(label, scalar type, field name, field number)], upstream)]
NEWER_CRIU_MESSAGES = {
    "tcp-stream.proto": [
        ("tcp_opts_entry", [("optional", "bool", "cork", 1), ("optional", "bool", "nodelay", 2),
                            ("optional", "uint32", "keepcnt", 3), ("optional", "uint32", "keepidle", 4),
                            ("optional", "uint32", "keepintvl", 5)],
         "TCP_CORK, TCP_NODELAY, TCP_KEEP*; upstream images/tcp-stream.proto"),
    ],
}

SCALAR_TYPE_NAMES = {
    FDP.TYPE_DOUBLE: "double",
    FDP.TYPE_FLOAT: "float",
    FDP.TYPE_INT64: "int64",
    FDP.TYPE_UINT64: "uint64",
    FDP.TYPE_INT32: "int32",
    FDP.TYPE_FIXED64: "fixed64",
    FDP.TYPE_FIXED32: "fixed32",
    FDP.TYPE_BOOL: "bool",
    FDP.TYPE_STRING: "string",
    FDP.TYPE_BYTES: "bytes",
    FDP.TYPE_UINT32: "uint32",
    FDP.TYPE_SFIXED32: "sfixed32",
    FDP.TYPE_SFIXED64: "sfixed64",
    FDP.TYPE_SINT32: "sint32",
    FDP.TYPE_SINT64: "sint64",
}

LABEL_NAMES = {
    FDP.LABEL_OPTIONAL: "optional",
    FDP.LABEL_REQUIRED: "required",
    FDP.LABEL_REPEATED: "repeated",
}


def die(msg):
    sys.exit("gen-protos: " + msg)


# --------------------------------------------------------------------------
# Loading and stripping CRIU's descriptors


def load_pycriu_descriptors():
    """Returns {file name: FileDescriptorProto} for every pycriu *_pb2 module."""
    if not os.path.isdir(PYCRIU_IMAGES):
        die("no pycriu images directory at %s (install Debian's `criu`)" % PYCRIU_IMAGES)
    # pycriu's modules import each other as top-level modules
    # (`import core_x86_pb2`), exactly as pycriu/images/__init__.py arranges.
    sys.path.insert(0, PYCRIU_IMAGES)
    files = {}
    for path in sorted(glob.glob(os.path.join(PYCRIU_IMAGES, "*_pb2.py"))):
        module = importlib.import_module(os.path.basename(path)[:-3])
        fdp = descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)
        if fdp.name in files:
            die("two modules define %s" % fdp.name)
        files[fdp.name] = fdp
    if not files:
        die("no *_pb2.py modules in %s" % PYCRIU_IMAGES)
    return files


def strip_field_options(field, where):
    """Removes CRIU's custom (criu) extension; keeps standard options."""
    if not field.HasField("options"):
        return
    opts = field.options
    for fd, _ in opts.ListFields():
        if fd.is_extension:
            opts.ClearExtension(fd)
    opts.DiscardUnknownFields()  # (criu) if opts_pb2 was not registered
    if opts.ByteSize() == 0:
        field.ClearField("options")
        return
    unsupported = [fd.name for fd, _ in opts.ListFields()
                   if fd.name not in ("packed", "deprecated")]
    if unsupported:
        die("%s: unsupported field options %s" % (where, unsupported))


def strip_message(msg, where):
    where = "%s.%s" % (where, msg.name)
    for field in msg.field:
        strip_field_options(field, "%s.%s" % (where, field.name))
    for nested in msg.nested_type:
        strip_message(nested, where)


def strip_criu_options(files):
    """Returns a new dict without DROPPED_FILES, their imports, and (criu) options."""
    out = {}
    for name, fdp in files.items():
        if name in DROPPED_FILES:
            continue
        fdp = descriptor_pb2.FileDescriptorProto.FromString(fdp.SerializeToString())
        if fdp.public_dependency or fdp.weak_dependency:
            die("%s: public/weak imports are not handled" % name)
        deps = [d for d in fdp.dependency if d not in DROPPED_FILES]
        del fdp.dependency[:]
        fdp.dependency.extend(deps)
        for msg in fdp.message_type:
            strip_message(msg, name)
        if fdp.extension:
            die("%s: file-level extensions are not handled" % name)
        out[name] = fdp
    for name, fdp in out.items():
        for dep in fdp.dependency:
            if dep not in out:
                die("%s imports %s, which pycriu does not provide" % (name, dep))
    return out


def add_newer_criu_fields(files):
    """Adds NEWER_CRIU_FIELDS to `files` (in place).

    Returns {file name: {".message.path.field": upstream note}} for the fields
    actually added, which render_file() uses to comment them.
    """
    labels = {v: k for k, v in LABEL_NAMES.items()}
    types = {v: k for k, v in SCALAR_TYPE_NAMES.items()}
    added = {}
    defined_in = {}  # new message name -> the file it is added to
    for name, messages in sorted(NEWER_CRIU_MESSAGES.items()):
        if name not in files:
            die("NEWER_CRIU_MESSAGES: pycriu has no %s" % name)
        for msg_name, fields, note in messages:
            if any(m.name == msg_name for f in files.values() for m in f.message_type):
                die("NEWER_CRIU_MESSAGES: pycriu already has a message %s" % msg_name)
            msg = files[name].message_type.add(name=msg_name)
            for label, type_, field_name, number in fields:
                if label not in labels or label == "required" or type_ not in types:
                    die("NEWER_CRIU_MESSAGES: %s.%s must be an optional/repeated scalar" % (msg_name, field_name))
                msg.field.add().CopyFrom(FDP(name=field_name, number=number, label=labels[label], type=types[type_]))
            defined_in[msg_name] = name
            added.setdefault(name, {})["." + msg_name] = note
    for name, entries in sorted(NEWER_CRIU_FIELDS.items()):
        if name not in files:
            die("NEWER_CRIU_FIELDS: pycriu has no %s" % name)
        for msg_path, label, type_, field_name, number, note in entries:
            where = "NEWER_CRIU_FIELDS: %s %s.%s" % (name, msg_path, field_name)
            if label not in labels or (type_ not in types and type_ not in defined_in):
                die("%s: only scalar fields and NEWER_CRIU_MESSAGES are supported" % where)
            if label == "required":
                die("%s: a required field would break reading 3.17 images" % where)
            scope, msg = files[name].message_type, None
            for part in msg_path.split("."):
                msg = next((m for m in scope if m.name == part), None)
                if msg is None:
                    die("%s: no message %s" % (where, msg_path))
                scope = msg.nested_type
            if type_ in defined_in:
                new = FDP(name=field_name, number=number, label=labels[label], type=FDP.TYPE_MESSAGE,
                          type_name="." + type_)
                if defined_in[type_] != name and defined_in[type_] not in files[name].dependency:
                    files[name].dependency.append(defined_in[type_])
            else:
                new = FDP(name=field_name, number=number, label=labels[label], type=types[type_])
            same_name = [f for f in msg.field if f.name == field_name]
            same_number = [f for f in msg.field if f.number == number]
            if same_name or same_number:
                old = same_name[0] if same_name == same_number else None
                if old is not None and (old.label, old.type, old.HasField("type_name"),
                                        old.HasField("default_value")) == \
                        (new.label, new.type, False, False):
                    print("gen-protos: pycriu already has %s; delete that entry" % where)
                    continue
                die("%s = %d conflicts with pycriu's %s" % (
                    where, number, [(f.name, f.number) for f in same_name + same_number]))
            for r in msg.reserved_range:
                if r.start <= number < r.end:
                    die("%s: number %d is reserved in pycriu's schema" % (where, number))
            if field_name in msg.reserved_name:
                die("%s: name is reserved in pycriu's schema" % where)
            msg.field.add().CopyFrom(new)
            added.setdefault(name, {})[".%s.%s" % (msg_path, field_name)] = note
    return added


def topo_order(files):
    """File names, every file after its imports (a FileDescriptorSet needs this)."""
    order, seen = [], set()

    def visit(name):
        if name in seen:
            return
        seen.add(name)
        for dep in files[name].dependency:
            visit(dep)
        order.append(name)

    for name in sorted(files):
        visit(name)
    return order


# --------------------------------------------------------------------------
# Swift type names


def camel(name):
    """protobuf-c style: core_entry -> CoreEntry, user_x86_regs_entry -> UserX86RegsEntry."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def swift_named(files):
    """Copy of `files` with every message and enum renamed to UpperCamelCase.

    protoc-gen-swift only CamelCases the *package* part of a type name and
    keeps the message name as written, so CRIU's package-less `core_entry`
    would become a Swift type literally named `core_entry`. Type names are
    not part of the protobuf wire format (only field numbers and types are),
    so renaming them in the descriptors handed to protoc-gen-swift gives the
    same names protobuf-c (and CRIU's C code) use -- CoreEntry, VmaEntry,
    FdTypes, CoreEntry.March -- with byte-identical encoding. Field names and
    enum value names are untouched (Swift camelCases those itself).
    """
    renamed = {}  # ".old.full.name" -> ".New.Full.Name"
    out = {}

    def rename_enum(enum, old_scope, new_scope, taken):
        new = camel(enum.name)
        if new in taken:
            die("Swift name %s%s would be used twice" % (new_scope, new))
        taken.add(new)
        renamed[old_scope + enum.name] = new_scope + new
        enum.name = new

    def rename_message(msg, old_scope, new_scope, taken):
        old_full, new = old_scope + msg.name, camel(msg.name)
        if new in taken:
            die("Swift name %s%s would be used twice" % (new_scope, new))
        taken.add(new)
        renamed[old_full] = new_scope + new
        msg.name = new
        inner = set()
        for nested in msg.nested_type:
            rename_message(nested, old_full + ".", new_scope + new + ".", inner)
        for enum in msg.enum_type:
            rename_enum(enum, old_full + ".", new_scope + new + ".", inner)

    top_level = set()  # no package: every file shares one namespace
    for name in sorted(files):
        fdp = descriptor_pb2.FileDescriptorProto.FromString(files[name].SerializeToString())
        for msg in fdp.message_type:
            rename_message(msg, ".", ".", top_level)
        for enum in fdp.enum_type:
            rename_enum(enum, ".", ".", top_level)
        out[name] = fdp

    def retarget(msg):
        for field in msg.field:
            if field.type_name:
                if field.type_name not in renamed:
                    die("unresolved type %s" % field.type_name)
                field.type_name = renamed[field.type_name]
        for nested in msg.nested_type:
            retarget(nested)

    for fdp in out.values():
        for msg in fdp.message_type:
            retarget(msg)
    return out


# --------------------------------------------------------------------------
# Rendering .proto text


def quote(s):
    out = []
    for ch in s:
        o = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif o < 0x20 or o == 0x7F:
            out.append("\\%03o" % o)
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def type_name(field):
    if field.type in (FDP.TYPE_MESSAGE, FDP.TYPE_ENUM):
        # No package: ".core_entry.march" -> "core_entry.march". The round-trip
        # check in verify_text() proves every reference resolves identically.
        return field.type_name.lstrip(".")
    if field.type == FDP.TYPE_GROUP:
        die("groups are not handled (%s)" % field.name)
    return SCALAR_TYPE_NAMES[field.type]


def default_literal(field):
    value = field.default_value
    if field.type == FDP.TYPE_STRING:
        return quote(value)
    if field.type == FDP.TYPE_BYTES:
        return '"%s"' % value  # descriptor already holds it C-escaped
    return value  # numbers, bools, enum value names, inf/nan


def render_field(field, indent):
    if field.HasField("oneof_index"):
        die("oneofs are not handled (%s)" % field.name)
    if field.HasField("extendee"):
        die("extensions are not handled (%s)" % field.name)
    opts = []
    if field.HasField("default_value"):
        opts.append("default = %s" % default_literal(field))
    if field.HasField("options"):
        if field.options.HasField("packed"):
            opts.append("packed = %s" % str(field.options.packed).lower())
        if field.options.HasField("deprecated"):
            opts.append("deprecated = %s" % str(field.options.deprecated).lower())
    suffix = " [%s]" % ", ".join(opts) if opts else ""
    return "%s%s %s %s = %d%s;" % (indent, LABEL_NAMES[field.label], type_name(field),
                                   field.name, field.number, suffix)


def render_reserved(desc, indent, lines):
    ranges = []
    for r in desc.reserved_range:
        # Message reserved ranges are end-exclusive, enum ones end-inclusive.
        end = r.end - 1 if isinstance(desc, descriptor_pb2.DescriptorProto) else r.end
        ranges.append(str(r.start) if r.start == end else "%d to %d" % (r.start, end))
    if ranges:
        lines.append("%sreserved %s;" % (indent, ", ".join(ranges)))
    if desc.reserved_name:
        lines.append("%sreserved %s;" % (indent, ", ".join(quote(n) for n in desc.reserved_name)))


def render_enum(enum, indent, lines):
    lines.append("%senum %s {" % (indent, enum.name))
    inner = indent + "\t"
    if enum.HasField("options"):
        if enum.options.HasField("allow_alias"):
            lines.append("%soption allow_alias = %s;" % (inner, str(enum.options.allow_alias).lower()))
        other = [fd.name for fd, _ in enum.options.ListFields() if fd.name != "allow_alias"]
        if other:
            die("enum %s: unsupported options %s" % (enum.name, other))
    width = max((len(v.name) for v in enum.value), default=0)
    for v in enum.value:
        if v.HasField("options"):
            die("enum value %s: options are not handled" % v.name)
        lines.append("%s%s = %d;" % (inner, v.name.ljust(width), v.number))
    render_reserved(enum, inner, lines)
    lines.append("%s}" % indent)


def render_message(msg, indent, lines, scope=".", added=None):
    if msg.oneof_decl:
        die("message %s: oneofs are not handled" % msg.name)
    if msg.extension:
        die("message %s: nested extensions are not handled" % msg.name)
    if msg.HasField("options"):
        die("message %s: message options are not handled" % msg.name)
    note = (added or {}).get(scope + msg.name)
    if note is not None:
        lines.append("%s// not in CRIU 3.17: %s" % (indent, note))
    lines.append("%smessage %s {" % (indent, msg.name))
    inner = indent + "\t"
    for enum in msg.enum_type:
        render_enum(enum, inner, lines)
        lines.append("")
    for nested in msg.nested_type:
        render_message(nested, inner, lines, scope + msg.name + ".", added)
        lines.append("")
    for field in msg.field:
        line = render_field(field, inner)
        note = (added or {}).get(scope + msg.name + "." + field.name)
        if note is not None:
            line += " // not in CRIU 3.17: " + note
        lines.append(line)
    for r in msg.extension_range:
        lines.append("%sextensions %d to %s;" % (inner, r.start,
                                                 "max" if r.end >= 536870912 else r.end - 1))
    render_reserved(msg, inner, lines)
    if lines[-1] == "":
        lines.pop()
    lines.append("%s}" % indent)


def render_file(fdp, added=None):
    """`added`: {".message.path.field": note} of NEWER_CRIU_FIELDS entries."""
    if fdp.syntax not in ("", "proto2"):
        die("%s: unexpected syntax %r" % (fdp.name, fdp.syntax))
    if fdp.package:
        die("%s: unexpected package %r" % (fdp.name, fdp.package))
    if fdp.HasField("options"):
        die("%s: file options are not handled" % fdp.name)
    if fdp.service:
        die("%s: services are not handled" % fdp.name)
    lines = [
        "// SPDX-License-Identifier: MIT",
        "//",
        "// GENERATED by Scripts/gen-protos.py -- DO NOT EDIT.",
        "// Rendered from the FileDescriptorProto of CRIU's images/%s as shipped" % fdp.name,
        "// in pycriu (Debian criu 3.17). CRIU's custom (criu).* field options and the",
        "// opts.proto import are dropped; the wire format is unchanged.",
    ]
    if added:
        lines += [
            "// Fields and messages marked `not in CRIU 3.17` come from newer upstream CRIU",
            "// (see NEWER_CRIU_FIELDS and NEWER_CRIU_MESSAGES in Scripts/gen-protos.py).",
        ]
    lines += [
        "// Swift types are generated from this schema with UpperCamelCase type names",
        "// (core_entry -> CoreEntry); see Scripts/gen-protos.py.",
        "",
        'syntax = "proto2";',
        "",
    ]
    for dep in fdp.dependency:
        lines.append('import "%s";' % dep)
    if fdp.dependency:
        lines.append("")
    for enum in fdp.enum_type:
        render_enum(enum, "", lines)
        lines.append("")
    for msg in fdp.message_type:
        render_message(msg, "", lines, ".", added)
        lines.append("")
    while lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# Verification and code generation


def normalized(fdp):
    """Copy without things protoc adds when compiling text (json_name)."""
    fdp = descriptor_pb2.FileDescriptorProto.FromString(fdp.SerializeToString())

    def clean(msg):
        for field in msg.field:
            field.ClearField("json_name")
        for nested in msg.nested_type:
            clean(nested)

    for msg in fdp.message_type:
        clean(msg)
    fdp.ClearField("source_code_info")
    return fdp


def verify_text(files, order, tmp):
    """Compiles the written .proto text and compares it to `files`, i.e. the
    stripped CRIU descriptors plus NEWER_CRIU_FIELDS."""
    out = os.path.join(tmp, "from-text.pb")
    run([PROTOC, "--proto_path=" + SCHEMA_DIR, "--include_imports",
         "--descriptor_set_out=" + out] + order)
    fds = descriptor_pb2.FileDescriptorSet.FromString(open(out, "rb").read())
    compiled = {f.name: f for f in fds.file}
    if set(compiled) != set(files):
        die("text compiled to a different file set: %s" % sorted(set(compiled) ^ set(files)))
    for name in order:
        a, b = normalized(files[name]), normalized(compiled[name])
        if a != b:
            die("%s: compiled .proto text differs from the (patched) CRIU descriptor:"
                "\n%s\n--- vs ---\n%s"
                % (name, a, b))


def run(cmd):
    result = subprocess.run(cmd, cwd=REPO)
    if result.returncode != 0:
        die("command failed (%d): %s" % (result.returncode, " ".join(cmd)))


def main():
    plugin = os.environ.get("PROTOC_GEN_SWIFT")
    if not plugin:
        die("set PROTOC_GEN_SWIFT to a protoc-gen-swift binary (see the top of this script)")
    plugin = os.path.abspath(plugin)
    if not os.access(plugin, os.X_OK):
        die("PROTOC_GEN_SWIFT=%s is not executable" % plugin)
    if shutil.which(PROTOC) is None:
        die("protoc not found (apt-get install protobuf-compiler, or set PROTOC)")

    files = strip_criu_options(load_pycriu_descriptors())
    added = add_newer_criu_fields(files)
    order = topo_order(files)

    # Clean previous output.
    os.makedirs(SCHEMA_DIR, exist_ok=True)
    for old in glob.glob(os.path.join(PROTO_DIR, "*.pb.swift")) + \
            glob.glob(os.path.join(SCHEMA_DIR, "*.proto")):
        os.remove(old)

    for name in order:
        with open(os.path.join(SCHEMA_DIR, name), "w") as f:
            f.write(render_file(files[name], added.get(name)))

    with tempfile.TemporaryDirectory(prefix="gen-protos.") as tmp:
        verify_text(files, order, tmp)

        descriptor_set = os.path.join(tmp, "criu.pb")
        swift_files = swift_named(files)
        fds = descriptor_pb2.FileDescriptorSet()
        for name in order:
            fds.file.add().CopyFrom(swift_files[name])
        with open(descriptor_set, "wb") as f:
            f.write(fds.SerializeToString())

        run([PROTOC,
             "--plugin=protoc-gen-swift=" + plugin,
             "--descriptor_set_in=" + descriptor_set,
             "--swift_opt=Visibility=Public",
             "--swift_out=" + PROTO_DIR] + order)

    print("gen-protos: %d schemas -> %s" % (len(order), os.path.relpath(PROTO_DIR, REPO)))
    for name in order:
        print("  %s" % name)


if __name__ == "__main__":
    main()
