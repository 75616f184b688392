/// How much memory a dumped process had and how much of it the image holds, in total and per
/// mapping (what `cryo memparse` and `cryo inspect` print).
public struct MemoryReport: Sendable {
    /// One mapping and the bytes of it that were dumped.
    public struct Mapping: Sendable {
        /// First address.
        public let start: UInt64
        /// Address after the end.
        public let end: UInt64
        /// `rwxp` / `rwxs`.
        public let permissions: String
        /// The file, or `[stack]`, `[heap]`, `[anon]`...
        public let backing: String
        /// File offset of a file mapping.
        public let offset: UInt64
        /// Bytes of it in the pages image.
        public let dumped: UInt64
        /// Its size.
        public var size: UInt64 { end &- start }
    }

    /// The pid.
    public let pid: UInt32
    /// The command name.
    public let command: String
    /// Every mapping.
    public let mappings: [Mapping]
    /// Bytes mapped in all (VSZ).
    public var mapped: UInt64 { mappings.reduce(0) { $0 &+ $1.size } }
    /// Bytes in the pages image (resident, written pages).
    public var dumped: UInt64 { mappings.reduce(0) { $0 &+ $1.dumped } }
    /// Bytes of private anonymous mappings (heap, stacks, malloc arenas).
    public let anonymous: UInt64
    /// Bytes of file mappings.
    public let fileBacked: UInt64
    /// Bytes of shared mappings (MAP_SHARED).
    public let shared: UInt64

    /// The report for the process whose memory is `memory`.
    public init(_ memory: ProcessMemory, command: String) {
        pid = memory.pid
        self.command = command
        var mappings: [Mapping] = []
        var anonymous: UInt64 = 0, fileBacked: UInt64 = 0, shared: UInt64 = 0
        for vma in memory.vmas {
            let dumped = memory.dumped(in: vma)
            let size = vma.end &- vma.start
            if vma.status & VMAStatus.anonPrivate != 0 { anonymous &+= size }
            if vma.status & (VMAStatus.filePrivate | VMAStatus.fileShared) != 0 { fileBacked &+= size }
            if vma.flags & 1 != 0 { shared &+= size }
            mappings.append(Mapping(start: vma.start, end: vma.end, permissions: ProcessMemory.permissions(vma),
                                    backing: memory.backing(vma), offset: vma.pgoff, dumped: dumped))
        }
        self.mappings = mappings
        self.anonymous = anonymous
        self.fileBacked = fileBacked
        self.shared = shared
    }

    /// The report as JSON (sizes in bytes).
    public var json: JSONValue {
        var o = JSONObject()
        o["pid"] = .int(pid)
        o["command"] = .string(command)
        o["mapped_bytes"] = .int(mapped)
        o["dumped_bytes"] = .int(dumped)
        o["anonymous_bytes"] = .int(anonymous)
        o["file_bytes"] = .int(fileBacked)
        o["shared_bytes"] = .int(shared)
        o["mappings"] = .array(mappings.map { m in
            var v = JSONObject()
            v["start"] = .string(CritText.hex(m.start))
            v["end"] = .string(CritText.hex(m.end))
            v["permissions"] = .string(m.permissions)
            v["backing"] = .string(m.backing)
            v["offset"] = .int(m.offset)
            v["size_bytes"] = .int(m.size)
            v["dumped_bytes"] = .int(m.dumped)
            return .object(v)
        })
        return .object(o)
    }
}
