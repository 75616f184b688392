/// Turns one protobuf message of a CRIU image into crit's JSON object (pycriu `pb2dict`).
///
/// Field for field it prints what crit prints: the fields present on the wire (protobuf's
/// `ListFields()`), in field-number order, under their .proto names; 64-bit integers as plain
/// numbers; enums by name; bytes as base64 with line breaks. With `pretty`, the `(criu)`
/// options apply: `hex` fields (and everything inside a `hex` message) as `0x...`, devices as
/// `major:minor`, flags by name, `dict` values by name, `ipadd` lists as one address.
/// As in protobuf, a value of an unknown enum number or with the wrong wire type is an unknown
/// field (not printed), a repeated scalar may come packed or not, and a singular message
/// that appears twice is the merge of both.
struct MessageDecoder {
    let schema: CriuSchema
    let file: String
    let pretty: Bool

    init(schema: CriuSchema = .shared, file: String, pretty: Bool) {
        self.schema = schema
        self.file = file
        self.pretty = pretty
    }

    /// Decodes the message `type` held in `bytes[range]`.
    func decode(_ type: MessageSchema, _ bytes: [UInt8], _ range: Range<Int>, hex: Bool = false, depth: Int = 0) throws -> JSONObject {
        guard depth < 100 else {
            throw ImageFormatError(.corrupt, file: file, offset: range.lowerBound, "messages nested too deeply")
        }
        let found = try collect(type, bytes, range)
        var object = JSONObject()
        for field in type.fields {
            guard let values = found[field.number], !values.isEmpty else { continue }
            let isHex = hex || field.hex
            if field.type == .message {
                guard let sub = field.typeName.flatMap(schema.message) else { continue }
                if field.isRepeated {
                    object[field.name] = .array(try values.map { v in
                        guard case .bytes(let r) = v else { return .object(JSONObject()) }
                        return .object(try decode(sub, bytes, r, hex: isHex, depth: depth + 1))
                    })
                } else {
                    object[field.name] = .object(try decodeMerged(sub, bytes, values, hex: isHex, depth: depth + 1))
                }
            } else if field.isRepeated {
                if pretty, field.ipAddress, let address = CritText.ipAddress(values.map(\.u32)) {
                    object[field.name] = .array([.string(address)])
                } else {
                    object[field.name] = .array(values.map { scalar(field, $0, bytes, hex: isHex) })
                }
            } else {
                object[field.name] = scalar(field, values[values.count - 1], bytes, hex: isHex)
            }
        }
        return object
    }

    /// A singular message field that occurs more than once is the merge of its occurrences,
    /// which in protobuf is the same as decoding their concatenation.
    private func decodeMerged(_ type: MessageSchema, _ bytes: [UInt8], _ values: [WireReader.Value], hex: Bool, depth: Int) throws -> JSONObject {
        let ranges = values.compactMap { v -> Range<Int>? in if case .bytes(let r) = v { r } else { nil } }
        if ranges.count == 1 { return try decode(type, bytes, ranges[0], hex: hex, depth: depth) }
        var joined: [UInt8] = []
        for r in ranges { joined += bytes[r] }
        do {
            return try decode(type, joined, 0..<joined.count, hex: hex, depth: depth)
        } catch let e as ImageFormatError {
            throw ImageFormatError(e.kind, file: file, offset: ranges.first?.lowerBound, "in a repeated occurrence of a \(type.name): \(e.reason)")
        }
    }

    /// The known, well-typed values of each field of a message, in wire order (packed runs
    /// unpacked).
    func collect(_ type: MessageSchema, _ bytes: [UInt8], _ range: Range<Int>) throws -> [Int: [WireReader.Value]] {
        var reader = WireReader(bytes, range, file: file)
        var found: [Int: [WireReader.Value]] = [:]
        while !reader.atEnd {
            let t = try reader.tag()
            guard let value = try reader.value(wireType: t.wireType, tagOffset: t.offset),
                  let field = type.field(number: t.number) else { continue }
            let expected = field.type.wireType
            if t.wireType == expected {
                if field.type == .enum, !knownEnum(field, value) { continue }
                found[field.number, default: []].append(value)
            } else if field.isRepeated, t.wireType == 2, expected != 2, case .bytes(let r) = value {
                var packed = WireReader(bytes, r, file: file)
                while !packed.atEnd {
                    guard let v = try packed.value(wireType: expected, tagOffset: packed.at) else { break }
                    if field.type == .enum, !knownEnum(field, v) { continue }
                    found[field.number, default: []].append(v)
                }
            }
        }
        return found
    }

    private func knownEnum(_ field: FieldSchema, _ value: WireReader.Value) -> Bool {
        guard case .varint(let v) = value, let e = field.typeName.flatMap({ schema.enums[$0] }) else { return false }
        return e.names[Int32(truncatingIfNeeded: v)] != nil
    }

    /// One scalar value in crit's JSON form.
    func scalar(_ field: FieldSchema, _ value: WireReader.Value, _ bytes: [UInt8], hex: Bool) -> JSONValue {
        switch field.type {
        case .string:
            guard case .bytes(let r) = value else { return .null }
            return .string(String(decoding: bytes[r], as: UTF8.self))
        case .bytes:
            guard case .bytes(let r) = value else { return .null }
            if field.conv == "unix_name" { return .string(CritText.quotedPrintable(Array(bytes[r]))) }
            return .string(CritText.base64Lines(bytes[r]))
        case .bool:
            return .bool(value.u64 != 0)
        case .enum:
            let n = Int32(truncatingIfNeeded: value.u64)
            return .string(field.typeName.flatMap { schema.enums[$0]?.names[n] } ?? String(n))
        case .message:
            return .null
        default:
            let number = IntegerValue(field.type, value)
            guard pretty else { return .number(number.text) }
            if hex { return .string(number.hex) }
            if field.dev { return .string(CritText.device(number.signed, old: field.oldDev)) }
            if let flags = field.flags {
                guard let map = CritText.flagMaps[flags] else { return .string(number.hex) }
                return .string(CritText.flagNames(number.unsigned, map))
            }
            if let dict = field.dict, let name = CritText.dictMaps[dict]?[field.name]?[number.signed] {
                return .string(name)
            }
            return .number(number.text)
        }
    }
}

/// An integer field's value, signed or unsigned as its type says.
struct IntegerValue {
    let signed: Int64
    let isUnsigned: Bool

    init(_ type: FieldSchema.FieldType, _ value: WireReader.Value) {
        let raw = value.u64
        switch type {
        case .int32, .enum: signed = Int64(Int32(truncatingIfNeeded: raw)); isUnsigned = false
        case .sint32:
            let u = UInt32(truncatingIfNeeded: raw)
            signed = Int64(Int32(bitPattern: (u >> 1) ^ (0 &- (u & 1)))); isUnsigned = false
        case .sint64: signed = Int64(bitPattern: (raw >> 1) ^ (0 &- (raw & 1))); isUnsigned = false
        case .sfixed32: signed = Int64(Int32(bitPattern: UInt32(truncatingIfNeeded: raw))); isUnsigned = false
        case .int64, .sfixed64: signed = Int64(bitPattern: raw); isUnsigned = false
        case .uint32, .fixed32: signed = Int64(UInt32(truncatingIfNeeded: raw)); isUnsigned = true
        default: signed = Int64(bitPattern: raw); isUnsigned = true
        }
    }

    var unsigned: UInt64 { UInt64(bitPattern: signed) }
    var text: String { isUnsigned ? String(unsigned) : String(signed) }
    var hex: String { isUnsigned ? CritText.hex(unsigned) : CritText.hex(signed) }
}

extension WireReader.Value {
    /// The value as an unsigned 64-bit number (0 for a length-delimited value).
    var u64: UInt64 {
        switch self {
        case .varint(let v), .fixed64(let v): v
        case .fixed32(let v): UInt64(v)
        case .bytes: 0
        }
    }

    /// The low 32 bits.
    var u32: UInt32 { UInt32(truncatingIfNeeded: u64) }
}
