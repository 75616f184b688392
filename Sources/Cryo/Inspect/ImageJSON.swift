/// Whole image files to and from crit's JSON: `{"magic": "CORE", "entries": [...]}` (pycriu
/// `images.load` / `images.dump`), including the raw payloads some kinds carry after their
/// entries (pipe data, socket queues, TCP streams, SysV IPC contents, ghost files) as `extra`.
///
/// `decode` then `encode` gives back the same bytes for any image written the canonical way
/// (by CRIU, crit or Cryo); unknown fields, which crit does not print either, are dropped.
public enum ImageJSON {
    /// Decodes an image file held in `bytes` (`file` names it in errors).
    /// - Parameters:
    ///   - pretty: crit's `--pretty` (`crit show`): hex, flag and device fields as text.
    ///   - noPayload: crit's `--nopl`: payloads replaced by their size (`"... <4KB>"`).
    public static func decode(_ bytes: [UInt8], file: String, pretty: Bool = false, noPayload: Bool = false,
                              schema: CriuSchema = .shared) throws -> JSONValue {
        let (name, start) = try magic(bytes, file: file)
        guard let handler = schema.handlers[name], let first = schema.message(handler.message) else {
            throw ImageFormatError(.unsupportedKind, file: file, offset: start - 4,
                                   "\(name) images have no decoder (crit has none either)")
        }
        var reader = EntryReader(bytes: bytes, file: file, at: start, decoder: MessageDecoder(schema: schema, file: file, pretty: pretty))
        var entries: [JSONValue] = []
        switch handler.layout {
        case .entries:
            while !reader.atEnd {
                let (range, object) = try reader.entry(first)
                var entry = object
                if let extra = handler.extra {
                    entry["extra"] = try reader.extra(extra, message: first, range: range, noPayload: noPayload)
                }
                entries.append(.object(entry))
            }
        case .pagemap:
            guard let rest = schema.message("pagemap_entry") else { break }
            var type = first
            while !reader.atEnd {
                entries.append(.object(try reader.entry(type).1))
                type = rest
            }
        case .ghost:
            guard let chunk = schema.message("ghost_chunk_entry") else { break }
            let (range, head) = try reader.entry(first)
            var entry = head
            if reader.boolField(first, "chunks", range) {
                entries.append(.object(entry))
                while !reader.atEnd {
                    let (r, object) = try reader.entry(chunk)
                    var c = object
                    let length = reader.intField(chunk, "len", r)
                    let data = try reader.take(length, what: "ghost file chunk")
                    if !noPayload { c["extra"] = .string(CritText.base64Lines(bytes[data])) }
                    entries.append(.object(c))
                }
            } else {
                let data = try reader.take(UInt64(bytes.count - reader.at), what: "ghost file contents")
                if !noPayload { entry["extra"] = .string(CritText.base64Lines(bytes[data])) }
                entries.append(.object(entry))
            }
        }
        var image = JSONObject()
        image["magic"] = .string(name)
        image["entries"] = .array(entries)
        return .object(image)
    }

    /// The kind of an image: its CRIU magic name and where its entries start. A leading
    /// `IMG_COMMON`/`IMG_SERVICE` word is skipped, as crit does.
    public static func magic(_ bytes: [UInt8], file: String) throws -> (name: String, start: Int) {
        guard bytes.count >= 4 else {
            throw ImageFormatError(.truncated, file: file, offset: 0, "no magic: the file has \(bytes.count) bytes")
        }
        var value = littleEndian32(bytes, 0)
        var start = 4
        if value == ImageMagic.imgCommon.rawValue || value == ImageMagic.imgService.rawValue {
            guard bytes.count >= 8 else {
                throw ImageFormatError(.truncated, file: file, offset: 4, "no type magic after the \(ImageMagic(rawValue: value)) magic")
            }
            value = littleEndian32(bytes, 4)
            start = 8
        }
        guard let name = ImageMagic(rawValue: value).name else {
            throw ImageFormatError(.unknownMagic, file: file, offset: start - 4,
                                   "unknown magic 0x\(String(value, radix: 16)): not a CRIU image (raw data such as pages-*.img has no magic)")
        }
        return (name, start)
    }

    /// Encodes crit's JSON form of an image (what `decode` or `crit decode` prints, plain or
    /// pretty) into the image's bytes, as `crit encode` does.
    public static func encode(_ json: JSONValue, file: String, schema: CriuSchema = .shared) throws -> [UInt8] {
        func bad(_ reason: String) -> ImageFormatError { ImageFormatError(.badJSON, file: file, offset: nil, reason) }
        guard let image = json.objectValue, let name = image["magic"]?.stringValue, let entries = image["entries"]?.arrayValue else {
            throw bad("expected {\"magic\": NAME, \"entries\": [...]}")
        }
        guard let magic = ImageMagic.all[name] else { throw bad("unknown magic name \(name)") }
        guard let handler = schema.handlers[name], let first = schema.message(handler.message) else {
            throw bad("\(name) images have no encoder (crit has none either)")
        }
        var out: [UInt8] = []
        if name != "INVENTORY" {
            let head = name == "STATS" || name == "IRMAP_CACHE" ? ImageMagic.imgService : ImageMagic.imgCommon
            out += littleEndianBytes(head.rawValue)
        }
        out += littleEndianBytes(magic.rawValue)
        let encoder = MessageEncoder(schema: schema, file: file)
        func frame(_ payload: [UInt8]) {
            out += littleEndianBytes(UInt32(payload.count))
            out += payload
        }
        for (i, value) in entries.enumerated() {
            let path = "entries[\(i)]"
            guard let entry = value.objectValue else { throw bad("\(path): expected an object") }
            var type = first
            switch handler.layout {
            case .entries: break
            case .pagemap: if i > 0, let rest = schema.message("pagemap_entry") { type = rest }
            case .ghost: if i > 0, let chunk = schema.message("ghost_chunk_entry") { type = chunk }
            }
            let payload = try encoder.encode(type, entry, path: path)
            frame(payload)
            switch handler.layout {
            case .pagemap: break
            case .ghost:
                let chunked = entries.first?.objectValue?["chunks"].map { if case .bool(true) = $0 { true } else { false } } ?? false
                if i > 0 || !chunked {
                    guard case .string(let text)? = entry["extra"], let data = CritText.decodeBase64(text) else {
                        throw bad("\(path).extra: a ghost file needs its contents as base64 (decode without --nopl)")
                    }
                    out += data
                }
            case .entries:
                guard let extra = handler.extra, let value = entry["extra"], pythonTruthy(value) else { continue }
                out += try extraBytes(extra, value, entry: entry, type: type, encoder: encoder, path: "\(path).extra", bad: bad)
            }
        }
        return out
    }

    private static func pythonTruthy(_ v: JSONValue) -> Bool {
        switch v {
        case .null: false
        case .bool(let b): b
        case .string(let s): !s.isEmpty
        case .array(let a): !a.isEmpty
        case .object(let o): !o.isEmpty
        case .number(let n): Double(n) != 0
        }
    }

    private static func extraBytes(_ extra: ImageHandler.Extra, _ value: JSONValue, entry: JSONObject, type: MessageSchema,
                                   encoder: MessageEncoder, path: String, bad: (String) -> ImageFormatError) throws -> [UInt8] {
        func base64(_ v: JSONValue?) throws -> [UInt8] {
            guard case .string(let text)? = v, let data = CritText.decodeBase64(text) else { throw bad("\(path): expected base64 text") }
            return data
        }
        func field(_ name: String) throws -> Int64 {
            guard let f = type.fields.first(where: { $0.name == name }), let v = entry[name] else {
                throw bad("\(path): the entry has no \(name)")
            }
            return try encoder.integer(f, v, path: path)
        }
        func padded(_ data: [UInt8], _ size: Int, to alignment: Int) -> [UInt8] {
            let body = Array(data.prefix(size))
            let rounded = (size + alignment - 1) / alignment * alignment
            return body + [UInt8](repeating: 0, count: max(0, rounded - body.count))
        }
        switch extra {
        case .pipesData, .skQueues, .bpfmapData:
            return try base64(value)
        case .tcpStream:
            guard let o = value.objectValue else { throw bad("\(path): expected {\"inq\": ..., \"outq\": ...}") }
            return try base64(o["inq"]) + base64(o["outq"])
        case .ipcShm:
            let size = try field("size")
            guard size >= 0, size < Int64(Int32.max) else { throw bad("\(path): bad size \(size)") }
            return padded(try base64(value), Int(size), to: 4)
        case .ipcSem:
            guard let items = value.arrayValue else { throw bad("\(path): expected a list of semaphore values") }
            guard Int64(items.count) == (try field("nsems")) else { throw bad("\(path): number of semaphores mismatch") }
            var data: [UInt8] = []
            for item in items {
                guard case .number(let t) = item, let v = UInt16(t) else { throw bad("\(path): \(item.numberText) is not a u16") }
                data += [UInt8(v & 0xff), UInt8(v >> 8)]
            }
            return padded(data, data.count, to: 8)
        case .ipcMsg:
            guard let items = value.arrayValue, items.count % 2 == 0,
                  let msgType = CriuSchema.shared.message("ipc_msg") else { throw bad("\(path): expected [message, text, ...] pairs") }
            var data: [UInt8] = []
            for i in stride(from: 0, to: items.count, by: 2) {
                guard let m = items[i].objectValue else { throw bad("\(path)[\(i)]: expected an ipc_msg object") }
                let payload = try encoder.encode(msgType, m, path: "\(path)[\(i)]")
                data += littleEndianBytes(UInt32(payload.count)) + payload
                guard let sizeField = msgType.fields.first(where: { $0.name == "msize" }), let sv = m["msize"] else {
                    throw bad("\(path)[\(i)]: no msize")
                }
                let msize = try encoder.integer(sizeField, sv, path: path)
                guard msize >= 0, msize < Int64(Int32.max) else { throw bad("\(path)[\(i)]: bad msize \(msize)") }
                data += padded(try base64(items[i + 1]), Int(msize), to: 8)
            }
            return data
        }
    }
}

/// Walks the `u32 size` + message frames of an image, with the payloads some kinds have.
private struct EntryReader {
    let bytes: [UInt8]
    let file: String
    var at: Int
    let decoder: MessageDecoder

    var atEnd: Bool { at >= bytes.count }

    func failure(_ kind: ImageFormatError.Kind, at offset: Int, _ reason: String) -> ImageFormatError {
        ImageFormatError(kind, file: file, offset: offset, reason)
    }

    /// The next `u32 size` + message; returns the message's byte range and its JSON.
    mutating func entry(_ type: MessageSchema) throws -> (Range<Int>, JSONObject) {
        let start = at
        guard bytes.count - at >= 4 else {
            throw failure(.truncated, at: start, "incomplete entry size: \(bytes.count - at) bytes left")
        }
        let size = Int(littleEndian32(bytes, at))
        guard size <= Int(Int32.max) else { throw failure(.corrupt, at: start, "entry size \(size) is negative as crit reads it") }
        guard size <= bytes.count - at - 4 else {
            throw failure(.truncated, at: start, "entry of \(size) bytes, only \(bytes.count - at - 4) left")
        }
        let range = (at + 4)..<(at + 4 + size)
        at = range.upperBound
        return (range, try decoder.decode(type, bytes, range))
    }

    /// `length` raw bytes from here.
    mutating func take(_ length: UInt64, what: String) throws -> Range<Int> {
        guard length <= UInt64(bytes.count - at) else {
            throw failure(.truncated, at: at, "\(what) of \(length) bytes, only \(bytes.count - at) left")
        }
        let r = at..<(at + Int(length))
        at = r.upperBound
        return r
    }

    /// The last value of integer field `name` of the message in `range` (0 if absent).
    func intField(_ type: MessageSchema, _ name: String, _ range: Range<Int>) -> UInt64 {
        guard let f = type.fields.first(where: { $0.name == name }),
              let values = try? decoder.collect(type, bytes, range)[f.number], let last = values.last else { return 0 }
        return UInt64(bitPattern: IntegerValue(f.type, last).signed)
    }

    /// Whether bool field `name` is present and true.
    func boolField(_ type: MessageSchema, _ name: String, _ range: Range<Int>) -> Bool {
        guard let f = type.fields.first(where: { $0.name == name }),
              let values = try? decoder.collect(type, bytes, range)[f.number], let last = values.last else { return false }
        return last.u64 != 0
    }

    /// The payload after an entry, as crit prints it (or its size, with `noPayload`).
    mutating func extra(_ kind: ImageHandler.Extra, message type: MessageSchema, range: Range<Int>, noPayload: Bool) throws -> JSONValue {
        let this = self
        func field(_ name: String) -> UInt64 { this.intField(type, name, range) }
        func blob(_ length: UInt64, _ what: String) throws -> JSONValue {
            let r = try take(length, what: what)
            return noPayload ? .string("... <\(CritText.humanSize(length))>") : .string(CritText.base64Lines(bytes[r]))
        }
        // Sizes come from the file: saturate instead of overflowing (take() then refuses them).
        func round(_ x: UInt64, _ to: UInt64) -> UInt64 { x > UInt64.max - to ? UInt64.max : (x + to - 1) / to * to }
        func plus(_ a: UInt64, _ b: UInt64) -> UInt64 { a > UInt64.max - b ? UInt64.max : a + b }
        func twice(_ a: UInt64) -> UInt64 { a > UInt64.max / 2 ? UInt64.max : a * 2 }
        switch kind {
        case .pipesData: return try blob(field("bytes"), "pipe data")
        case .skQueues: return try blob(field("length"), "socket queue data")
        case .bpfmapData: return try blob(plus(field("keys_bytes"), field("values_bytes")), "BPF map data")
        case .tcpStream:
            let inq = try take(field("inq_len"), what: "TCP receive queue")
            let outq = try take(field("outq_len"), what: "TCP send queue")
            if noPayload {
                at = bytes.count // crit skips to the end of the file
                return .string("... <\(CritText.humanSize(UInt64(inq.count + outq.count)))>")
            }
            var o = JSONObject()
            o["inq"] = .string(CritText.base64Lines(bytes[inq]))
            o["outq"] = .string(CritText.base64Lines(bytes[outq]))
            return .object(o)
        case .ipcShm:
            // CRIU keeps the contents in pagemap/pages images when in_pagemaps is set (crit 3.17
            // does not know this and misreads such files); then nothing follows the entry.
            if boolField(type, "in_pagemaps", range) { return noPayload ? .string("... <0B>") : .string("") }
            let size = field("size")
            let r = try take(round(size, 4), what: "shared memory contents")
            let data = bytes[r.lowerBound..<(r.lowerBound + Int(size))]
            return noPayload ? .string("... <\(CritText.humanSize(size))>") : .string(CritText.base64Lines(data))
        case .ipcSem:
            let n = field("nsems")
            let r = try take(round(twice(n), 8), what: "semaphore values")
            if noPayload { return .string("... <\(CritText.humanSize(twice(n)))>") }
            return .array((0..<Int(n)).map { i in .int(UInt16(bytes[r.lowerBound + 2 * i]) | UInt16(bytes[r.lowerBound + 2 * i + 1]) << 8) })
        case .ipcMsg:
            guard let msgType = CriuSchema.shared.message("ipc_msg") else { return .null }
            let plain = MessageDecoder(schema: decoder.schema, file: file, pretty: false)
            var items: [JSONValue] = []
            var total: UInt64 = 0
            for _ in 0..<field("qnum") {
                let start = at
                guard bytes.count - at >= 4 else { throw failure(.truncated, at: start, "incomplete message size") }
                let size = UInt64(littleEndian32(bytes, at))
                at += 4
                let mr = try take(size, what: "message header")
                let m = try plain.decode(msgType, bytes, mr)
                let msize = intField(msgType, "msize", mr)
                let text = try take(round(msize, 8), what: "message text")
                total = plus(total, plus(size, msize))
                items.append(.object(m))
                items.append(.string(CritText.base64Lines(bytes[text.lowerBound..<(text.lowerBound + Int(msize))])))
            }
            return noPayload ? .string("... <\(CritText.humanSize(total))>") : .array(items)
        }
    }
}
