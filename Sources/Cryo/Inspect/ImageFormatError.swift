/// Why an image file (or the JSON form of one) could not be read, written or understood: the
/// file, the byte offset where the problem was found, and what is wrong there.
///
/// Every decoder in `Inspect/` reports bad input with this error instead of trapping, so
/// `cryo show`, `decode`, `x`, `inspect`, `memparse` and `coredump` print one line naming the
/// file and the offset and exit 1, for corrupt, truncated and foreign files alike.
public struct ImageFormatError: Error, CustomStringConvertible, Equatable, Sendable {
    /// What kind of problem it is.
    public enum Kind: String, Sendable {
        /// The file ends in the middle of something (a magic, an entry size, a field).
        case truncated
        /// The bytes are there but do not decode (bad varint, wrong wire type, bad length).
        case corrupt
        /// The leading magic is not one of CRIU's (e.g. a raw `pages-*.img` or another format).
        case unknownMagic
        /// The magic is CRIU's but nothing here can decode that kind of image.
        case unsupportedKind
        /// JSON input (for `encode`) is not valid JSON or does not fit the image's schema.
        case badJSON
        /// The images of a dump disagree with each other (a missing or inconsistent file).
        case inconsistent
        /// The file could not be opened, read or written.
        case io
    }

    /// The file the problem is in (a path, or `-` for standard input).
    public var file: String
    /// The byte offset in `file` where the problem was found (for JSON: the character offset);
    /// nil when the problem is not at a particular place (a missing file).
    public var offset: Int?
    /// What kind of problem.
    public var kind: Kind
    /// A sentence saying what is wrong.
    public var reason: String

    /// An error in `file` at `offset`.
    public init(_ kind: Kind, file: String, offset: Int?, _ reason: String) {
        self.kind = kind
        self.file = file
        self.offset = offset
        self.reason = reason
    }

    /// `FILE: at offset N (0xN): REASON` (or `FILE: REASON` without an offset).
    public var description: String {
        let what = kind == .truncated ? "truncated: " + reason : reason
        guard let offset else { return "\(file): \(what)" }
        return "\(file): at offset \(offset) (0x\(String(offset, radix: 16))): \(what)"
    }

    /// The same error, its offset moved by `delta` (for errors found in a slice of a file).
    func shifted(by delta: Int) -> ImageFormatError {
        var e = self
        e.offset = offset.map { $0 + delta }
        return e
    }
}
