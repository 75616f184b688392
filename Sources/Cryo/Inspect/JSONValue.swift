/// A JSON document as crit reads and writes it: objects keep their key order, numbers keep
/// their exact text (64-bit values such as `18446744073709551612` must survive a round trip,
/// which `Double` cannot guarantee).
public indirect enum JSONValue: Equatable, Sendable {
    /// `null`.
    case null
    /// `true` / `false`.
    case bool(Bool)
    /// A number, as written (e.g. `-5`, `18446744073709551615`, `1e3`).
    case number(String)
    /// A string.
    case string(String)
    /// An array.
    case array([JSONValue])
    /// An object, keys in order.
    case object(JSONObject)

    /// A number from an integer.
    public static func int<T: BinaryInteger>(_ v: T) -> JSONValue { .number(String(v)) }

    /// The object, if this is one.
    public var objectValue: JSONObject? { if case .object(let o) = self { o } else { nil } }
    /// The array, if this is one.
    public var arrayValue: [JSONValue]? { if case .array(let a) = self { a } else { nil } }
    /// The string, if this is one.
    public var stringValue: String? { if case .string(let s) = self { s } else { nil } }
}

/// A JSON object whose keys keep the order they were added in (as Python's dicts do). A key
/// added twice keeps its first place and its last value, as `json.loads` does.
public struct JSONObject: Equatable, Sendable {
    /// The keys, in order.
    public private(set) var keys: [String] = []
    private var values: [String: JSONValue] = [:]

    /// An empty object.
    public init() {}

    /// The value for `key`; setting a new key appends it.
    public subscript(key: String) -> JSONValue? {
        get { values[key] }
        set {
            if let newValue {
                if values.updateValue(newValue, forKey: key) == nil { keys.append(key) }
            } else if values.removeValue(forKey: key) != nil {
                keys.removeAll { $0 == key }
            }
        }
    }

    /// The members in order.
    public var members: [(key: String, value: JSONValue)] { keys.map { ($0, values[$0]!) } }
    /// Whether it has no keys.
    public var isEmpty: Bool { keys.isEmpty }
}

// MARK: - Rendering, exactly as Python's json.dumps does

extension JSONValue {
    /// The text Python's `json.dumps(value, indent=4 if pretty else None)` prints: compact
    /// form with `", "` and `": "` separators, pretty form indented by 4 with `","` at line
    /// ends; every character outside printable ASCII escaped (`ensure_ascii`).
    public func rendered(pretty: Bool) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(4096)
        render(into: &out, pretty: pretty, depth: 0)
        return String(decoding: out, as: UTF8.self)
    }

    func render(into out: inout [UInt8], pretty: Bool, depth: Int) {
        switch self {
        case .null: out += Array("null".utf8)
        case .bool(let b): out += Array((b ? "true" : "false").utf8)
        case .number(let n): out += Array(n.utf8)
        case .string(let s): JSONValue.renderString(s, into: &out)
        case .array(let items):
            if items.isEmpty { out += Array("[]".utf8); return }
            out.append(UInt8(ascii: "["))
            for (i, item) in items.enumerated() {
                if i > 0 { out += pretty ? [UInt8(ascii: ",")] : Array(", ".utf8) }
                if pretty { JSONValue.newline(&out, depth + 1) }
                item.render(into: &out, pretty: pretty, depth: depth + 1)
            }
            if pretty { JSONValue.newline(&out, depth) }
            out.append(UInt8(ascii: "]"))
        case .object(let object):
            if object.isEmpty { out += Array("{}".utf8); return }
            out.append(UInt8(ascii: "{"))
            for (i, member) in object.members.enumerated() {
                if i > 0 { out += pretty ? [UInt8(ascii: ",")] : Array(", ".utf8) }
                if pretty { JSONValue.newline(&out, depth + 1) }
                JSONValue.renderString(member.key, into: &out)
                out += Array(": ".utf8)
                member.value.render(into: &out, pretty: pretty, depth: depth + 1)
            }
            if pretty { JSONValue.newline(&out, depth) }
            out.append(UInt8(ascii: "}"))
        }
    }

    private static func newline(_ out: inout [UInt8], _ depth: Int) {
        out.append(10)
        out += [UInt8](repeating: 32, count: depth * 4)
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)

    static func renderString(_ s: String, into out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        func u(_ v: UInt16) {
            out += Array("\\u".utf8)
            for shift in [12, 8, 4, 0] { out.append(hexDigits[Int(v >> UInt16(shift)) & 0xf]) }
        }
        for unit in s.utf16 {
            switch unit {
            case 0x22: out += Array("\\\"".utf8)
            case 0x5c: out += Array("\\\\".utf8)
            case 0x0a: out += Array("\\n".utf8)
            case 0x0d: out += Array("\\r".utf8)
            case 0x09: out += Array("\\t".utf8)
            case 0x08: out += Array("\\b".utf8)
            case 0x0c: out += Array("\\f".utf8)
            case 0x20...0x7e: out.append(UInt8(unit))
            default: u(unit)
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}

// MARK: - Parsing

extension JSONValue {
    /// Parses a JSON document (as Python's `json.loads` accepts it, without NaN/Infinity).
    /// Errors name `file` and the byte offset.
    public static func parse(_ bytes: [UInt8], file: String) throws -> JSONValue {
        var parser = JSONParser(bytes: bytes, file: file)
        parser.skipSpace()
        let value = try parser.value(depth: 0)
        parser.skipSpace()
        guard parser.at == bytes.count else { throw parser.failure("unexpected text after the JSON document") }
        return value
    }
}

private struct JSONParser {
    let bytes: [UInt8]
    let file: String
    var at = 0

    init(bytes: [UInt8], file: String) {
        self.bytes = bytes
        self.file = file
    }

    func failure(_ reason: String) -> ImageFormatError {
        ImageFormatError(.badJSON, file: file, offset: at, reason)
    }

    mutating func skipSpace() {
        while at < bytes.count, [0x20, 0x09, 0x0a, 0x0d].contains(bytes[at]) { at += 1 }
    }

    mutating func expect(_ literal: String) throws {
        let l = Array(literal.utf8)
        guard at + l.count <= bytes.count, Array(bytes[at..<(at + l.count)]) == l else {
            throw failure("expected \(literal)")
        }
        at += l.count
    }

    mutating func value(depth: Int) throws -> JSONValue {
        guard depth < 512 else { throw failure("nested too deeply") }
        guard at < bytes.count else { throw failure("unexpected end of JSON") }
        switch bytes[at] {
        case UInt8(ascii: "{"):
            at += 1
            var object = JSONObject()
            skipSpace()
            if at < bytes.count, bytes[at] == UInt8(ascii: "}") { at += 1; return .object(object) }
            while true {
                skipSpace()
                guard at < bytes.count, bytes[at] == UInt8(ascii: "\"") else { throw failure("expected a string key") }
                let key = try string()
                skipSpace()
                try expect(":")
                skipSpace()
                object[key] = try value(depth: depth + 1)
                skipSpace()
                guard at < bytes.count else { throw failure("unexpected end of JSON in an object") }
                if bytes[at] == UInt8(ascii: ",") { at += 1; continue }
                if bytes[at] == UInt8(ascii: "}") { at += 1; return .object(object) }
                throw failure("expected , or } in an object")
            }
        case UInt8(ascii: "["):
            at += 1
            var items: [JSONValue] = []
            skipSpace()
            if at < bytes.count, bytes[at] == UInt8(ascii: "]") { at += 1; return .array(items) }
            while true {
                skipSpace()
                items.append(try value(depth: depth + 1))
                skipSpace()
                guard at < bytes.count else { throw failure("unexpected end of JSON in an array") }
                if bytes[at] == UInt8(ascii: ",") { at += 1; continue }
                if bytes[at] == UInt8(ascii: "]") { at += 1; return .array(items) }
                throw failure("expected , or ] in an array")
            }
        case UInt8(ascii: "\""):
            return .string(try string())
        case UInt8(ascii: "t"): try expect("true"); return .bool(true)
        case UInt8(ascii: "f"): try expect("false"); return .bool(false)
        case UInt8(ascii: "n"): try expect("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return .number(try number())
        default:
            throw failure("unexpected character \(printable(bytes[at]))")
        }
    }

    func printable(_ b: UInt8) -> String {
        (0x21...0x7e).contains(b) ? "'\(Character(Unicode.Scalar(b)))'" : "0x" + String(b, radix: 16)
    }

    mutating func number() throws -> String {
        let start = at
        if bytes[at] == UInt8(ascii: "-") { at += 1 }
        func digits() -> Int {
            let s = at
            while at < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[at]) { at += 1 }
            return at - s
        }
        if at < bytes.count, bytes[at] == UInt8(ascii: "0") {
            at += 1 // no leading zeros: "01" is 0 followed by 1, as in Python
        } else {
            guard digits() > 0 else { throw failure("a number needs digits") }
        }
        if at < bytes.count, bytes[at] == UInt8(ascii: ".") {
            at += 1
            guard digits() > 0 else { throw failure("a number needs digits after '.'") }
        }
        if at < bytes.count, bytes[at] == UInt8(ascii: "e") || bytes[at] == UInt8(ascii: "E") {
            at += 1
            if at < bytes.count, bytes[at] == UInt8(ascii: "+") || bytes[at] == UInt8(ascii: "-") { at += 1 }
            guard digits() > 0 else { throw failure("a number needs digits in its exponent") }
        }
        return String(decoding: bytes[start..<at], as: UTF8.self)
    }

    mutating func hex4() throws -> UInt16 {
        guard at + 4 <= bytes.count else { throw failure("truncated \\u escape") }
        var v: UInt16 = 0
        for _ in 0..<4 {
            let c = bytes[at]
            let d: UInt8
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): d = c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): d = c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): d = c - UInt8(ascii: "A") + 10
            default: throw failure("bad \\u escape")
            }
            v = v << 4 | UInt16(d)
            at += 1
        }
        return v
    }

    mutating func string() throws -> String {
        at += 1 // opening quote
        var units: [UInt16] = []
        var run = at
        func flushRun() {
            if run < at { units += String(decoding: bytes[run..<at], as: UTF8.self).utf16 }
        }
        while true {
            guard at < bytes.count else { throw failure("unterminated string") }
            let c = bytes[at]
            if c == UInt8(ascii: "\"") {
                flushRun()
                at += 1
                return String(decoding: units, as: UTF16.self)
            }
            if c < 0x20 { throw failure("control character in a string") }
            if c != UInt8(ascii: "\\") { at += 1; continue }
            flushRun()
            at += 1
            guard at < bytes.count else { throw failure("unterminated escape") }
            let e = bytes[at]
            at += 1
            switch e {
            case UInt8(ascii: "\""): units.append(0x22)
            case UInt8(ascii: "\\"): units.append(0x5c)
            case UInt8(ascii: "/"): units.append(0x2f)
            case UInt8(ascii: "b"): units.append(0x08)
            case UInt8(ascii: "f"): units.append(0x0c)
            case UInt8(ascii: "n"): units.append(0x0a)
            case UInt8(ascii: "r"): units.append(0x0d)
            case UInt8(ascii: "t"): units.append(0x09)
            case UInt8(ascii: "u"): units.append(try hex4())
            default: at -= 1; throw failure("bad escape \\\(printable(e))")
            }
            run = at
        }
    }
}
