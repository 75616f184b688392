import Glibc
import SystemPackage

/// One page's word of `/proc/PID/pagemap` (Documentation/admin-guide/mm/pagemap.rst).
struct PagemapWord {
    /// The raw 64 bits.
    let raw: UInt64

    /// Bit 63: the page is present in RAM.
    var isPresent: Bool { raw & (1 << 63) != 0 }
    /// Bit 56: the page is mapped by this process only (map count 1).
    var isExclusive: Bool { raw & (1 << 56) != 0 }
    /// Bits 0-54 of a present page: its page frame number; nil if not present, or hidden
    /// (zero) from readers without CAP_SYS_ADMIN. Two processes that show one frame at an
    /// address map the same physical page.
    var frame: UInt64? {
        let frame = raw & ((1 << 55) - 1)
        return isPresent && frame != 0 ? frame : nil
    }
}

/// `/proc/PID/pagemap` of a process, opened for reading: one `PagemapWord` per virtual page.
final class ProcPagemap {
    /// The open file, for ioctls such as `PAGEMAP_SCAN`.
    let descriptor: FileDescriptor
    /// The process whose pagemap this is.
    let pid: pid_t

    /// Opens the pagemap of `pid`.
    init(pid: pid_t) throws {
        self.pid = pid
        do { descriptor = try FileDescriptor.open(FilePath("/proc/\(pid)/pagemap"), .readOnly, options: [.closeOnExec]) }
        catch { throw CryoError("cannot open /proc/\(pid)/pagemap", errno: error as? Errno ?? .ioError) }
    }

    deinit { try? descriptor.close() }

    /// The words of the pages of `range` (page aligned), one per page.
    func words(_ range: Range<UInt64>) throws -> [PagemapWord] {
        let pages = Int((range.upperBound - range.lowerBound) / 4096)
        var words = [UInt64](repeating: 0, count: pages)
        let offset = Int64(range.lowerBound / 4096 * 8)
        let read = try words.withUnsafeMutableBytes { buffer in
            do { return try descriptor.read(fromAbsoluteOffset: offset, into: buffer) }
            catch { throw CryoError("cannot read /proc/\(pid)/pagemap at 0x\(String(range.lowerBound, radix: 16))", errno: error as? Errno ?? .ioError) }
        }
        guard read == pages * 8 else {
            throw CryoError("short read of /proc/\(pid)/pagemap at 0x\(String(range.lowerBound, radix: 16)): \(read) of \(pages * 8) bytes")
        }
        return words.map(PagemapWord.init)
    }
}

/// `/proc/PID/mem` of a process, opened for reading.
///
/// Slower than `process_vm_readv` for pages only the process maps, but it leaves shared pages
/// shared: `process_vm_readv` pins the pages it reads (FOLL_PIN), and since Linux 5.19 a
/// read-only pin of an anonymous page that is shared copy-on-write makes the kernel give the
/// process its own copy first (unsharing). Reading a tree's memory that way would double the
/// memory its processes share, and the pages would no longer be the parent's.
struct ProcMemFile: Sendable {
    private let descriptor: FileDescriptor
    /// The process whose memory this is.
    let pid: pid_t

    /// Opens the memory of `pid`; `close()` it when done.
    init(pid: pid_t) throws {
        self.pid = pid
        do { descriptor = try FileDescriptor.open(FilePath("/proc/\(pid)/mem"), .readOnly, options: [.closeOnExec]) }
        catch { throw CryoError("cannot open /proc/\(pid)/mem", errno: error as? Errno ?? .ioError) }
    }

    /// Copies `buffer.count` bytes from `address` in the process into `buffer`.
    func read(_ address: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        var done = 0
        while done < buffer.count {
            let at = address + UInt64(done)
            // /proc/PID/mem takes the address as the file offset; addresses above 2^63 do not
            // occur in user space.
            let n: Int
            do { n = try descriptor.read(fromAbsoluteOffset: Int64(at), into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...])) }
            catch { throw CryoError("cannot read \(buffer.count - done) bytes at 0x\(String(at, radix: 16)) in process \(pid)", errno: error as? Errno ?? .ioError) }
            guard n > 0 else { throw CryoError("cannot read \(buffer.count - done) bytes at 0x\(String(at, radix: 16)) in process \(pid)", errno: .badAddress) }
            done += n
        }
    }

    /// Closes the file.
    func close() { try? descriptor.close() }
}
