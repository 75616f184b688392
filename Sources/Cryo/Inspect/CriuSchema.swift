/// CRIU's image schemas as crit sees them: every message with its fields (name, number,
/// label, type) and CRIU's `(criu)` field options, every enum, and which message (and which
/// trailing payload) each image kind holds.
///
/// Why a descriptor table rather than the generated `SwiftProtobuf.Message` types: crit's JSON
/// depends on things the generated code does not carry — the `(criu).hex/flags/dev/ipadd/
/// dict/conv` options were stripped from it, and presence and wire types are needed to print
/// exactly the fields crit's `ListFields()` prints — and `encode` must build a message from a
/// field *name* taken from JSON, which swift-protobuf offers only through its underscored,
/// unstable `_NameMap`/`Decoder` internals. One table, generated from the very descriptors crit
/// uses (`Scripts/gen-inspect-schema.py`), drives a small wire codec in both directions, so
/// decode and encode cannot disagree with each other or with crit.
public final class CriuSchema: @unchecked Sendable {
    /// The table, parsed once.
    public static let shared = CriuSchema(text: table)

    /// Messages by full name (`core_entry`, `core_entry.march` is an enum, ...).
    public let messages: [String: MessageSchema]
    /// Enums by full name.
    public let enums: [String: EnumSchema]
    /// crit's handler for each image kind, by CRIU magic name (`CORE`, `PAGEMAP`, ...).
    public let handlers: [String: ImageHandler]

    init(text: String) {
        var messages: [String: MessageSchema] = [:]
        var enums: [String: EnumSchema] = [:]
        var handlers: [String: ImageHandler] = [:]
        var message: MessageSchema?
        var enumName: String?
        var values: [(Int32, String)] = []
        func closeEnum() {
            if let name = enumName { enums[name] = EnumSchema(name: name, values: values) }
            enumName = nil
            values = []
        }
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ").map(String.init)
            guard let tag = parts.first else { continue }
            switch tag {
            case "M":
                closeEnum()
                let m = MessageSchema(name: parts[1])
                messages[parts[1]] = m
                message = m
            case "F":
                guard let message, let field = FieldSchema(parts) else { continue }
                message.add(field)
            case "E":
                closeEnum()
                message = nil
                enumName = parts[1]
            case "V":
                if let n = Int32(parts[1]) { values.append((n, parts[2])) }
            case "H":
                closeEnum()
                message = nil
                if let h = ImageHandler(parts) { handlers[h.magic] = h }
            default:
                continue
            }
        }
        closeEnum()
        self.messages = messages
        self.enums = enums
        self.handlers = handlers
    }

    /// The message a field of type `message` refers to.
    func message(_ name: String) -> MessageSchema? { messages[name] }
}

/// One protobuf message of CRIU's schemas.
public final class MessageSchema: @unchecked Sendable {
    /// Its full name, e.g. `core_entry` or `tcp_stream_entry`.
    public let name: String
    /// Its fields, in field-number order (the order crit prints them in).
    public private(set) var fields: [FieldSchema] = []
    private var byNumber: [Int: Int] = [:]

    init(name: String) { self.name = name }

    func add(_ field: FieldSchema) {
        byNumber[field.number] = fields.count
        fields.append(field)
    }

    /// The field with this number, if the schema has one.
    public func field(number: Int) -> FieldSchema? { byNumber[number].map { fields[$0] } }
}

/// One field of a message: what the descriptor says plus CRIU's `(criu)` options.
public struct FieldSchema: Sendable {
    /// The protobuf field types CRIU's schemas use.
    public enum FieldType: String, Sendable {
        case int32, int64, uint32, uint64, sint32, sint64, fixed32, fixed64, sfixed32, sfixed64
        case bool, string, bytes, `enum`, message

        /// The wire type a single value of this type is written with.
        var wireType: Int {
            switch self {
            case .fixed64, .sfixed64: 1
            case .fixed32, .sfixed32: 5
            case .string, .bytes, .message: 2
            default: 0
            }
        }
    }

    /// `required`, `optional` or `repeated`.
    public enum Label: String, Sendable { case required, optional, repeated }

    /// The field number.
    public let number: Int
    /// The field name as in the .proto (snake_case), which is crit's JSON key.
    public let name: String
    /// The label.
    public let label: Label
    /// The type.
    public let type: FieldType
    /// For `message` and `enum` fields: the full name of the type.
    public let typeName: String?
    /// `(criu).hex`: crit's pretty mode prints it (and every integer inside it) as `0x...`.
    public let hex: Bool
    /// `(criu).ipadd`: a repeated u32 that pretty mode prints as one IPv4/IPv6 address.
    public let ipAddress: Bool
    /// `(criu).flags`: the name of the flag table pretty mode names bits with (`mmap.prot`...).
    public let flags: String?
    /// `(criu).dev`: pretty mode prints it as `major:minor` (kernel encoding).
    public let dev: Bool
    /// `(criu).odev`: with `dev`, the device is in the old (glibc `makedev`) encoding.
    public let oldDev: Bool
    /// `(criu).dict`: the name of the value table pretty mode names values with (`gen`, `sk`).
    public let dict: String?
    /// `(criu).conv`: a custom bytes encoding instead of base64 (`unix_name`: quoted-printable).
    public let conv: String?
    /// `[packed = true]`: a repeated scalar written as one length-delimited run.
    public let packed: Bool
    /// A field newer CRIU writes that crit 3.17 does not know (it never prints it).
    public let newerThanCrit: Bool

    init?(_ parts: [String]) {
        guard parts.count >= 5, let number = Int(parts[1]), let label = Label(rawValue: parts[3]),
              let type = FieldType(rawValue: parts[4]) else { return nil }
        self.number = number
        self.name = parts[2]
        self.label = label
        self.type = type
        var rest = Array(parts.dropFirst(5))
        if type == .message || type == .enum, !rest.isEmpty {
            typeName = rest.removeFirst()
        } else {
            typeName = nil
        }
        func option(_ key: String) -> String? {
            rest.first { $0.hasPrefix(key + "=") }.map { String($0.dropFirst(key.count + 1)) }
        }
        hex = rest.contains("hex")
        ipAddress = rest.contains("ipadd")
        flags = option("flags")
        dev = rest.contains("dev")
        oldDev = rest.contains("odev")
        dict = option("dict")
        conv = option("conv")
        packed = rest.contains("packed")
        newerThanCrit = rest.contains("new")
    }

    /// Whether the field holds a list.
    public var isRepeated: Bool { label == .repeated }
}

/// A protobuf enum of CRIU's schemas.
public struct EnumSchema: Sendable {
    /// Its full name, e.g. `fd_types`.
    public let name: String
    /// Value names by number (the first name, should there be aliases).
    public let names: [Int32: String]
    /// Numbers by value name.
    public let numbers: [String: Int32]

    init(name: String, values: [(Int32, String)]) {
        self.name = name
        var names: [Int32: String] = [:]
        var numbers: [String: Int32] = [:]
        for (n, s) in values {
            if names[n] == nil { names[n] = s }
            numbers[s] = n
        }
        self.names = names
        self.numbers = numbers
    }
}

/// How crit reads one kind of image (pycriu `images.handlers`).
public struct ImageHandler: Sendable {
    /// The layout of the entries.
    public enum Layout: String, Sendable {
        /// `u32 size` + message, repeated (optionally each followed by a payload).
        case entries
        /// One `pagemap_head`, then `pagemap_entry`s.
        case pagemap
        /// One `ghost_file_entry`, then either the raw file or chunks.
        case ghost
    }

    /// The raw payload that follows each entry of some kinds.
    public enum Extra: String, Sendable {
        /// `pipes-data.img`, `fifo-data.img`: `bytes` raw bytes.
        case pipesData = "pipes_data"
        /// `sk-queues.img`: `length` raw bytes.
        case skQueues = "sk_queues"
        /// `tcp-stream-*.img`: `inq_len` then `outq_len` bytes.
        case tcpStream = "tcp_stream"
        /// `bpfmap-data.img`: `keys_bytes + values_bytes` bytes.
        case bpfmapData = "bpfmap_data"
        /// `ipcns-sem-*.img`: `nsems` u16 values, padded to 8 bytes.
        case ipcSem = "ipc_sem"
        /// `ipcns-msg-*.img`: `qnum` × (`u32 size` + `ipc_msg` + text padded to 8 bytes).
        case ipcMsg = "ipc_msg"
        /// `ipcns-shm-*.img`: `size` bytes, padded to 4.
        case ipcShm = "ipc_shm"
    }

    /// CRIU's magic name, e.g. `CORE`.
    public let magic: String
    /// The entry layout.
    public let layout: Layout
    /// The entry message (for `pagemap`/`ghost`: the first entry's).
    public let message: String
    /// The payload after each entry, if any.
    public let extra: Extra?

    init?(_ parts: [String]) {
        guard parts.count >= 4, let layout = Layout(rawValue: parts[2]) else { return nil }
        magic = parts[1]
        self.layout = layout
        message = parts[3]
        extra = parts.count > 4 ? Extra(rawValue: parts[4]) : nil
    }
}
