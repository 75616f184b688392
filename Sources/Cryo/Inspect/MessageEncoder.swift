/// Turns crit's JSON form of a message back into protobuf bytes (pycriu `dict2pb` followed by
/// `SerializeToString`), so that `cryo encode` reads what `crit decode` (plain or `--pretty`)
/// prints and writes what `crit encode` writes.
///
/// Keys that are not fields of the message are ignored, as crit ignores them. Integers may be
/// numbers or, as pretty mode prints them, strings: `0x..` (any `int(s, 0)` form), named flags
/// (`PROT_READ | PROT_WRITE`), devices (`8:1`), dict names (`Alive`). Fields are written in
/// field-number order; a message missing a required field is refused, as protobuf refuses
/// to serialize it.
struct MessageEncoder {
    let schema: CriuSchema
    let file: String

    init(schema: CriuSchema = .shared, file: String) {
        self.schema = schema
        self.file = file
    }

    func failure(_ path: String, _ reason: String) -> ImageFormatError {
        ImageFormatError(.badJSON, file: file, offset: nil, "\(path): \(reason)")
    }

    /// Encodes `object` as the message `type`; `path` names it in errors (`entries[2]`).
    func encode(_ type: MessageSchema, _ object: JSONObject, path: String, depth: Int = 0) throws -> [UInt8] {
        guard depth < 100 else { throw failure(path, "nested too deeply") }
        var w = WireWriter()
        var missing: [String] = []
        for field in type.fields {
            let here = "\(path).\(field.name)"
            guard let value = object[field.name] else {
                if field.label == .required { missing.append(field.name) }
                continue
            }
            if field.isRepeated {
                guard let items = value.arrayValue else { throw failure(here, "expected a list") }
                if field.ipAddress, case .string(let text)? = items.first {
                    guard let words = CritText.parseIPAddress(text) else { throw failure(here, "'\(text)' is not an IP address") }
                    for word in words { try write(field, .int(word), to: &w, path: here, depth: depth) }
                    continue
                }
                for (i, item) in items.enumerated() { try write(field, item, to: &w, path: "\(here)[\(i)]", depth: depth) }
            } else {
                try write(field, value, to: &w, path: here, depth: depth)
            }
        }
        guard missing.isEmpty else {
            throw failure(path, "message \(type.name) is missing required fields: \(missing.joined(separator: ", "))")
        }
        return w.bytes
    }

    private func write(_ field: FieldSchema, _ value: JSONValue, to w: inout WireWriter, path: String, depth: Int) throws {
        w.tag(field.number, field.type.wireType)
        switch field.type {
        case .message:
            guard let object = value.objectValue else { throw failure(path, "expected an object") }
            guard let sub = field.typeName.flatMap(schema.message) else { throw failure(path, "no schema for \(field.typeName ?? "?")") }
            w.lengthDelimited(try encode(sub, object, path: path, depth: depth + 1))
        case .string:
            w.lengthDelimited(Array(pythonString(value).utf8))
        case .bytes:
            guard case .string(let text) = value else { throw failure(path, "expected a string of bytes") }
            if field.conv == "unix_name" {
                w.lengthDelimited(CritText.decodeQuotedPrintable(text))
            } else {
                guard let data = CritText.decodeBase64(text) else { throw failure(path, "not valid base64") }
                w.lengthDelimited(data)
            }
        case .bool:
            w.varint(pythonTruth(value) ? 1 : 0)
        case .enum:
            guard let e = field.typeName.flatMap({ schema.enums[$0] }) else { throw failure(path, "no schema for \(field.typeName ?? "?")") }
            switch value {
            case .string(let name):
                guard let n = e.numbers[name] else {
                    throw failure(path, "'\(name)' is not a value of \(e.name) (\(e.names.sorted { $0.key < $1.key }.map(\.value).joined(separator: ", ")))")
                }
                w.varint(UInt64(bitPattern: Int64(n)))
            case .number(let text):
                guard let n = Int32(text), e.names[n] != nil else { throw failure(path, "\(text) is not a value of \(e.name)") }
                w.varint(UInt64(bitPattern: Int64(n)))
            default:
                throw failure(path, "expected the name of a value of \(e.name)")
            }
        default:
            let n = try integer(field, value, path: path)
            switch field.type {
            case .int32, .int64, .uint32, .uint64: w.varint(UInt64(bitPattern: n))
            case .sint32: let v = Int32(truncatingIfNeeded: n); w.varint(UInt64(UInt32(bitPattern: (v << 1) ^ (v >> 31))))
            case .sint64: w.varint(UInt64(bitPattern: (n << 1) ^ (n >> 63)))
            case .fixed32, .sfixed32: w.fixed32(UInt32(truncatingIfNeeded: n))
            default: w.fixed64(UInt64(bitPattern: n))
            }
        }
    }

    /// An integer field's value (as a 64-bit pattern), read the way `_dict2pb_cast` reads it,
    /// range-checked for the field's type.
    func integer(_ field: FieldSchema, _ value: JSONValue, path: String) throws -> Int64 {
        let n: Int64
        var unsignedBig = false
        switch value {
        case .number(let text):
            if let v = Int64(text) { n = v }
            else if let v = UInt64(text) { n = Int64(bitPattern: v); unsignedBig = true }
            else if let d = Double(text), d.isFinite, d > -9.3e18, d < 1.8e19 {
                n = d < 9.2e18 ? Int64(d.rounded(.towardZero)) : Int64(bitPattern: UInt64(d.rounded(.towardZero)))
                unsignedBig = d >= 9.2e18
            } else { throw failure(path, "\(text) is not an integer") }
        case .bool(let b):
            n = b ? 1 : 0
        case .string(let text):
            if field.dev {
                guard let v = CritText.parseDevice(text, old: field.oldDev) else { throw failure(path, "'\(text)' is not a major:minor device") }
                n = v
            } else if let flags = field.flags, let map = CritText.flagMaps[flags] {
                guard let v = CritText.parseFlags(text, map) else { throw failure(path, "'\(text)' is not a combination of \(flags) flags") }
                n = v
            } else if let dict = field.dict, let v = CritText.dictMaps[dict]?[field.name]?.first(where: { $0.value == text })?.key {
                n = v
            } else if let v = CritText.pythonInt(text) {
                n = v
                unsignedBig = v < 0 && !text.contains("-")
            } else {
                throw failure(path, "'\(text)' is not an integer")
            }
        default:
            throw failure(path, "expected an integer")
        }
        let fits: Bool
        switch field.type {
        case .int32, .sint32, .sfixed32: fits = !unsignedBig && n >= Int64(Int32.min) && n <= Int64(Int32.max)
        case .uint32, .fixed32: fits = !unsignedBig && n >= 0 && n <= Int64(UInt32.max)
        case .uint64, .fixed64: fits = unsignedBig || n >= 0
        default: fits = !unsignedBig
        }
        guard fits else { throw failure(path, "\(value.numberText) is out of range for \(field.type.rawValue)") }
        return n
    }

    /// Python's `str(value)` for a string field.
    private func pythonString(_ value: JSONValue) -> String {
        switch value {
        case .string(let s): s
        case .number(let n): n
        case .bool(let b): b ? "True" : "False"
        case .null: "None"
        default: value.rendered(pretty: false)
        }
    }

    /// Python's `bool(value)` for a bool field.
    private func pythonTruth(_ value: JSONValue) -> Bool {
        switch value {
        case .bool(let b): b
        case .number(let n): Double(n).map { $0 != 0 } ?? true
        case .string(let s): !s.isEmpty
        case .array(let a): !a.isEmpty
        case .object(let o): !o.isEmpty
        case .null: false
        }
    }
}

extension JSONValue {
    /// The value as it would appear in an error message.
    var numberText: String {
        switch self {
        case .number(let n): n
        case .string(let s): "'\(s)'"
        default: rendered(pretty: false)
        }
    }
}
