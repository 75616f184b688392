/// A CRIU image-file magic number.
///
/// Values are CRIU 3.17's (`criu/include/magic.h`, as listed in pycriu's `images/magic.py`;
/// the constants below mirror that file one for one, and ``all`` maps its names).
///
/// ## File framing
///
/// All integers below are 32-bit and in host byte order, i.e. little-endian on x86-64
/// (CRIU writes raw C `u32`s; crit reads them with Python's native `struct` format `'i'`).
///
/// ```
/// IMAGE   ::= [HEAD] TYPE { ENTRY }
/// HEAD    ::= u32 .imgCommon | u32 .imgService        (absent in inventory.img)
/// TYPE    ::= u32 type magic, e.g. .core
/// ENTRY   ::= SIZE PAYLOAD [EXTRA]
/// SIZE    ::= u32, byte length of PAYLOAD (not counting SIZE or EXTRA)
/// PAYLOAD ::= protobuf (proto2) encoding of the image's entry message
/// EXTRA   ::= raw bytes whose length the PAYLOAD determines (only the kinds listed below)
/// ```
///
/// Entries run to end of file; there is no count and no terminator (a file holding only the
/// magic(s) has zero entries).
///
/// ### Leading magics
///
/// Writing (CRIU's `img_write_magic()` in `criu/image.c`; crit's `images.dump()` does the same):
/// - `inventory.img`: just `.inventory` — no head magic.
/// - `stats-dump.img`, `stats-restore.img`, `irmap-cache.img` (CRIU opens them `O_SERVICE`):
///   `.imgService`, then `.stats` / `.irmapCache`.
/// - every other protobuf image: `.imgCommon`, then its type magic.
/// - raw images have no magic at all and are not protobuf: `pages-<id>.img` (the page contents a
///   pagemap refers to, page after page), `tmpfs-<dev>.tar.gz`, `tmpfs-dev-<id>.tar.gz`,
///   `ifaddr-/route-/route6-/rule-/iptables-/ip6tables-/nftables-<id>.img`, `netns-ct-/netns-exp-<id>.img`.
///   (CRIU's `RAW_IMAGE_MAGIC` is 0, meaning "no magic"; it is deliberately not a constant here.)
///
/// Reading:
/// - CRIU (`img_check_magic()`) is strict. If the inventory's `imgVersion` is
///   ``crtoolsImagesV1_1`` (2) — which is what current CRIU writes and expects — every
///   non-inventory image must start with exactly the head magic above (`.imgService` for the
///   service files, `.imgCommon` for the rest), and then the type magic the file name implies.
/// - crit (pycriu `images.py`, `__rhandler`) is lenient: it reads one u32; if that is
///   `IMG_COMMON` or `IMG_SERVICE` it reads a second u32 as the type magic, otherwise the first
///   u32 *is* the type magic (that is how `inventory.img` decodes). The type magic, not the file
///   name, selects the entry message.
///
/// ### Kinds with a special layout (crit's handlers in pycriu `images.py`)
///
/// Field names are the Swift property names of the generated messages.
/// - `PAGEMAP` (`pagemap-<pid>.img`, also `pagemap-shmem-<shmid>.img`): the first entry is a
///   `PagemapHead` (`pagesID` names `pages-<pagesID>.img`), every later entry a `PagemapEntry`.
///   The pages file holds the pages of the entries flagged PE_PRESENT, in entry order. Cryo's
///   extension: flag `0x8` alone (`MemoryResource.pageCOWParent`, crit prints `"0x8"`) marks
///   pages that are the parent process's (pstree `ppid`) at the same addresses, shared
///   copy-on-write at dump time; they take no room in this pages file (the parent's images
///   hold them, perhaps flagged again for its own parent). `cryo dump --no-cow-dedup` writes
///   none; CRIU cannot restore images that have them.
/// - `GHOST_FILE` (`ghost-file-<id in hex>.img`): one `GhostFileEntry`. If its `chunks` is true,
///   it is followed until EOF by (SIZE + `GhostChunkEntry` + exactly `len` raw bytes of file data
///   for offset `off`) groups; otherwise everything after the entry, to EOF, is the raw file
///   contents (no SIZE framing).
/// - `PIPES_DATA` (`pipes-data.img`) and `FIFO_DATA` (`fifo-data.img`): each `PipeDataEntry` is
///   followed by `bytes` raw bytes of queued pipe data.
/// - `SK_QUEUES` (`sk-queues.img`): each `SkPacketEntry` is followed by `length` raw bytes of
///   packet payload.
/// - `TCP_STREAM` (`tcp-stream-<inode in hex>.img`): the `TcpStreamEntry` is followed by `inqLen`
///   bytes of receive queue, then `outqLen` bytes of send queue.
/// - `BPFMAP_DATA` (`bpfmap-data.img`): each `BpfmapDataEntry` is followed by
///   `keysBytes + valuesBytes` raw bytes (all keys, then all values).
/// - `IPCNS_SHM` (`ipcns-shm-<id>.img`): crit 3.17 reads each `IpcShmEntry` as followed by `size`
///   bytes of segment contents, zero-padded to a multiple of 4. Note that CRIU itself dumps with
///   `inPagemaps = true` and then stores the contents in pagemap/pages images instead, with
///   nothing inline (crit does not know this); write inline bytes only when `inPagemaps` is
///   unset or false.
/// - `IPCNS_SEM` (`ipcns-sem-<id>.img`): each `IpcSemEntry` is followed by `nsems` u16 semaphore
///   values, zero-padded to a multiple of 8 bytes.
/// - `IPCNS_MSG` (`ipcns-msg-<id>.img`): each `IpcMsgEntry` is followed by `qnum` messages, each
///   SIZE + `IpcMsg` + `msize` bytes of message text zero-padded to a multiple of 8.
///
/// Every other kind is plain SIZE + PAYLOAD entries. Magics crit has no handler for: `SIGNAL`,
/// `BINFMT_MISC`, `KDAT` (and the head magics / ``crtoolsImagesV1_1``, which are not kinds).
public struct ImageMagic: RawRepresentable, Hashable, Sendable {
    public let rawValue: UInt32

    public init(rawValue: UInt32) {
        self.rawValue = rawValue
    }

    /// Not a file magic: the image-set version CRIU stores in `InventoryEntry.imgVersion`. Version 2 (v1.1) means every image except inventory.img starts with a head magic (`.imgCommon` / `.imgService`).
    public static let crtoolsImagesV1_1 = ImageMagic(rawValue: 0x00000002)  // 2

    /// Head magic: the first u32 of every protobuf image except inventory.img, stats-*.img and irmap-cache.img.
    public static let imgCommon = ImageMagic(rawValue: 0x54564319)  // 1414939417

    /// Head magic of the "service" files stats-dump.img, stats-restore.img and irmap-cache.img.
    public static let imgService = ImageMagic(rawValue: 0x55105940)  // 1427134784

    /// `inventory.img`: one `InventoryEntry`. The only image without a head magic.
    public static let inventory = ImageMagic(rawValue: 0x58313116)  // 1479618838

    /// `pstree.img`: one `PstreeEntry` per process.
    public static let pstree = ImageMagic(rawValue: 0x50273030)  // 1344745520

    /// `fdinfo-<files_id>.img`: one `FdinfoEntry` per open descriptor of a files table.
    public static let fdinfo = ImageMagic(rawValue: 0x56213732)  // 1445017394

    /// `pagemap-<pid>.img` (and `pagemap-shmem-<shmid>.img`): one `PagemapHead`, then `PagemapEntry`s.
    public static let pagemap = ImageMagic(rawValue: 0x56084025)  // 1443381285

    /// `core-<tid>.img`: one `CoreEntry` per thread.
    public static let core = ImageMagic(rawValue: 0x55053847)  // 1426405447

    /// `ids-<pid>.img`: one `TaskKobjIdsEntry`.
    public static let ids = ImageMagic(rawValue: 0x54432030)  // 1413685296

    /// `vmas-<pid>.img`: `VmaEntry`s (legacy; VMAs now live in `MmEntry.vmas`).
    public static let vmas = ImageMagic(rawValue: 0x54123737)  // 1410479927

    /// `pipes.img`: `PipeEntry`s.
    public static let pipes = ImageMagic(rawValue: 0x56513555)  // 1448162645

    /// `pipes-data.img`: `PipeDataEntry`s, each followed by `bytes` raw bytes.
    public static let pipesData = ImageMagic(rawValue: 0x56453709)  // 1447376649

    /// `fifo.img`: `FifoEntry`s.
    public static let fifo = ImageMagic(rawValue: 0x58364939)  // 1479952697

    /// `fifo-data.img`: `PipeDataEntry`s, each followed by `bytes` raw bytes.
    public static let fifoData = ImageMagic(rawValue: 0x59333054)  // 1496526932

    /// `sigacts-<pid>.img`: `SaEntry`s (legacy; now `TaskCoreEntry.sigactions`).
    public static let sigact = ImageMagic(rawValue: 0x55344201)  // 1429488129

    /// `unixsk.img`: `UnixSkEntry`s.
    public static let unixsk = ImageMagic(rawValue: 0x54373943)  // 1412905283

    /// `inetsk.img`: `InetSkEntry`s.
    public static let inetsk = ImageMagic(rawValue: 0x56443851)  // 1447311441

    /// `packetsk.img`: `PacketSockEntry`s.
    public static let packetsk = ImageMagic(rawValue: 0x60454618)  // 1615152664

    /// `itimers-<pid>.img`: `ItimerEntry`s (legacy; now `TaskCoreEntry.timers`).
    public static let itimers = ImageMagic(rawValue: 0x57464056)  // 1464221782

    /// `posix-timers-<pid>.img`: `PosixTimerEntry`s (legacy; now `TaskCoreEntry.timers`).
    public static let posixTimers = ImageMagic(rawValue: 0x52603957)  // 1382037847

    /// `sk-queues.img`: `SkPacketEntry`s, each followed by `length` raw bytes.
    public static let skQueues = ImageMagic(rawValue: 0x56264026)  // 1445347366

    /// `utsns-<id>.img`: `UtsnsEntry`.
    public static let utsns = ImageMagic(rawValue: 0x54473203)  // 1413952003

    /// `creds-<pid>.img`: `CredsEntry` (legacy; now `ThreadCoreEntry.creds`).
    public static let creds = ImageMagic(rawValue: 0x54023547)  // 1409430855

    /// `ipcns-var-<id>.img`: `IpcVarEntry`.
    public static let ipcVar = ImageMagic(rawValue: 0x53115007)  // 1393643527

    /// `ipcns-shm-<id>.img`: `IpcShmEntry`s (see the type documentation for trailing data).
    public static let ipcnsShm = ImageMagic(rawValue: 0x46283044)  // 1177038916

    /// `ipcns-msg-<id>.img`: `IpcMsgEntry`s, each followed by its queued messages.
    public static let ipcnsMsg = ImageMagic(rawValue: 0x55453737)  // 1430599479

    /// `ipcns-sem-<id>.img`: `IpcSemEntry`s, each followed by the semaphore values.
    public static let ipcnsSem = ImageMagic(rawValue: 0x59573019)  // 1498886169

    /// `reg-files.img`: `RegFileEntry`s (pre-files.img layout; see `.files`).
    public static let regFiles = ImageMagic(rawValue: 0x50363636)  // 1345730102

    /// `ext-files.img`: `ExtFileEntry`s.
    public static let extFiles = ImageMagic(rawValue: 0x59255641)  // 1495619137

    /// `fs-<pid>.img`: one `FsEntry`.
    public static let fs = ImageMagic(rawValue: 0x51403912)  // 1363163410

    /// `mm-<pid>.img`: one `MmEntry` (including the VMAs).
    public static let mm = ImageMagic(rawValue: 0x57492820)  // 1464412192

    /// `remap-fpath.img`: `RemapFilePathEntry`s.
    public static let remapFpath = ImageMagic(rawValue: 0x59133954)  // 1494432084

    /// `ghost-file-<id in hex>.img`: one `GhostFileEntry` followed by the file contents.
    public static let ghostFile = ImageMagic(rawValue: 0x52583605)  // 1381512709

    /// `tcp-stream-<inode in hex>.img`: one `TcpStreamEntry` followed by the queues.
    public static let tcpStream = ImageMagic(rawValue: 0x51465506)  // 1363563782

    /// `eventfd.img`: `EventfdFileEntry`s.
    public static let eventfdFile = ImageMagic(rawValue: 0x44523722)  // 1146238754

    /// `eventpoll.img`: `EventpollFileEntry`s.
    public static let eventpollFile = ImageMagic(rawValue: 0x45023858)  // 1157773400

    /// `eventpoll-tfd.img`: `EventpollTfdEntry`s.
    public static let eventpollTfd = ImageMagic(rawValue: 0x44433746)  // 1145255750

    /// `signalfd.img`: `SignalfdEntry`s.
    public static let signalfd = ImageMagic(rawValue: 0x57323820)  // 1462908960

    /// `inotify.img`: `InotifyFileEntry`s.
    public static let inotifyFile = ImageMagic(rawValue: 0x48424431)  // 1212302385

    /// `inotify-wd.img`: `InotifyWdEntry`s.
    public static let inotifyWd = ImageMagic(rawValue: 0x54562009)  // 1414930441

    /// `mountpoints-<id>.img`: `MntEntry`s.
    public static let mnts = ImageMagic(rawValue: 0x55563928)  // 1431714088

    /// `netdev-<id>.img`: `NetDeviceEntry`s.
    public static let netdev = ImageMagic(rawValue: 0x57373951)  // 1463236945

    /// `netns-<id>.img`: `NetnsEntry`.
    public static let netns = ImageMagic(rawValue: 0x55933752)  // 1435711314

    /// `tty.img`: `TtyFileEntry`s.
    public static let ttyFiles = ImageMagic(rawValue: 0x59433025)  // 1497575461

    /// `tty-info.img`: `TtyInfoEntry`s.
    public static let ttyInfo = ImageMagic(rawValue: 0x59453036)  // 1497706550

    /// `tty-data.img`: `TtyDataEntry`s.
    public static let ttyData = ImageMagic(rawValue: 0x59413026)  // 1497444390

    /// `filelocks.img`: `FileLockEntry`s.
    public static let fileLocks = ImageMagic(rawValue: 0x54323616)  // 1412576790

    /// `rlimit-<pid>.img`: `RlimitEntry`s (legacy; now `TaskCoreEntry.rlimits`).
    public static let rlimit = ImageMagic(rawValue: 0x57113925)  // 1460746533

    /// `fanotify.img`: `FanotifyFileEntry`s.
    public static let fanotifyFile = ImageMagic(rawValue: 0x55096122)  // 1426678050

    /// `fanotify-mark.img`: `FanotifyMarkEntry`s.
    public static let fanotifyMark = ImageMagic(rawValue: 0x56506035)  // 1448108085

    /// `signal-s-<pid>.img` / `signal-p-<tid>.img` (legacy; queued signals now live in `TaskCoreEntry.signalsS` / `ThreadCoreEntry.signalsP`). crit has no handler for it.
    public static let signal = ImageMagic(rawValue: 0x59255647)  // 1495619143

    /// `netlinksk.img`: `NetlinkSkEntry`s.
    public static let netlinkSk = ImageMagic(rawValue: 0x58005614)  // 1476417044

    /// `ns-files.img`: `NsFileEntry`s.
    public static let nsFiles = ImageMagic(rawValue: 0x61394011)  // 1631141905

    /// `tunfile.img`: `TunfileEntry`s.
    public static let tunfile = ImageMagic(rawValue: 0x57143751)  // 1460942673

    /// `cgroup.img`: one `CgroupEntry`.
    public static let cgroup = ImageMagic(rawValue: 0x59383330)  // 1496855344

    /// `timerfd.img`: `TimerfdEntry`s.
    public static let timerfd = ImageMagic(rawValue: 0x50493712)  // 1346975506

    /// `cpuinfo.img`: `CpuinfoEntry`.
    public static let cpuinfo = ImageMagic(rawValue: 0x61404013)  // 1631600659

    /// `userns-<id>.img`: `UsernsEntry`.
    public static let userns = ImageMagic(rawValue: 0x55474906)  // 1430735110

    /// `seccomp.img`: `SeccompEntry`.
    public static let seccomp = ImageMagic(rawValue: 0x64413049)  // 1681993801

    /// `binfmt-misc.img`: `BinfmtMiscEntry`s. crit has no handler for it.
    public static let binfmtMisc = ImageMagic(rawValue: 0x67343323)  // 1731474211

    /// `autofs-<id>.img`: `AutofsEntry`.
    public static let autofs = ImageMagic(rawValue: 0x49353943)  // 1228224835

    /// `files.img`: one `FileEntry` per open file description, of every kind (`FileEntry.type` is an `FdTypes`).
    public static let files = ImageMagic(rawValue: 0x56303138)  // 1445998904

    /// `memfd.img`: `MemfdInodeEntry`s.
    public static let memfdInode = ImageMagic(rawValue: 0x48453499)  // 1212495001

    /// `timens-<id>.img`: `TimensEntry`.
    public static let timens = ImageMagic(rawValue: 0x43114433)  // 1125205043

    /// `pidns-<id>.img`: `PidnsEntry`.
    public static let pidns = ImageMagic(rawValue: 0x61157326)  // 1628795686

    /// `bpfmap-file.img`: `BpfmapFileEntry`s.
    public static let bpfmapFile = ImageMagic(rawValue: 0x57506142)  // 1464885570

    /// `bpfmap-data.img`: `BpfmapDataEntry`s, each followed by `keys_bytes + values_bytes` raw bytes.
    public static let bpfmapData = ImageMagic(rawValue: 0x64324033)  // 1681014835

    /// `apparmor.img`: `ApparmorEntry`.
    public static let apparmor = ImageMagic(rawValue: 0x59423047)  // 1497509959

    /// `stats-dump.img` / `stats-restore.img`: one `StatsEntry`. Head magic is `.imgService`.
    public static let stats = ImageMagic(rawValue: 0x57093306)  // 1460220678

    /// `irmap-cache.img`: `IrmapCacheEntry`s. Head magic is `.imgService`.
    public static let irmapCache = ImageMagic(rawValue: 0x57004059)  // 1459634265

    /// CRIU's kerndat cache (`/run/criu.kdat`): a raw C struct, not an image. crit has no handler for it.
    public static let kdat = ImageMagic(rawValue: 0x57023458)  // 1459762264

    /// Every magic in pycriu's `magic.py`, keyed by CRIU's name (`"INVENTORY"`, `"REG_FILES"`, ...).
    public static let all: [String: ImageMagic] = [
        "CRTOOLS_IMAGES_V1_1": .crtoolsImagesV1_1,
        "IMG_COMMON": .imgCommon,
        "IMG_SERVICE": .imgService,
        "INVENTORY": .inventory,
        "PSTREE": .pstree,
        "FDINFO": .fdinfo,
        "PAGEMAP": .pagemap,
        "CORE": .core,
        "IDS": .ids,
        "VMAS": .vmas,
        "PIPES": .pipes,
        "PIPES_DATA": .pipesData,
        "FIFO": .fifo,
        "FIFO_DATA": .fifoData,
        "SIGACT": .sigact,
        "UNIXSK": .unixsk,
        "INETSK": .inetsk,
        "PACKETSK": .packetsk,
        "ITIMERS": .itimers,
        "POSIX_TIMERS": .posixTimers,
        "SK_QUEUES": .skQueues,
        "UTSNS": .utsns,
        "CREDS": .creds,
        "IPC_VAR": .ipcVar,
        "IPCNS_SHM": .ipcnsShm,
        "IPCNS_MSG": .ipcnsMsg,
        "IPCNS_SEM": .ipcnsSem,
        "REG_FILES": .regFiles,
        "EXT_FILES": .extFiles,
        "FS": .fs,
        "MM": .mm,
        "REMAP_FPATH": .remapFpath,
        "GHOST_FILE": .ghostFile,
        "TCP_STREAM": .tcpStream,
        "EVENTFD_FILE": .eventfdFile,
        "EVENTPOLL_FILE": .eventpollFile,
        "EVENTPOLL_TFD": .eventpollTfd,
        "SIGNALFD": .signalfd,
        "INOTIFY_FILE": .inotifyFile,
        "INOTIFY_WD": .inotifyWd,
        "MNTS": .mnts,
        "NETDEV": .netdev,
        "NETNS": .netns,
        "TTY_FILES": .ttyFiles,
        "TTY_INFO": .ttyInfo,
        "TTY_DATA": .ttyData,
        "FILE_LOCKS": .fileLocks,
        "RLIMIT": .rlimit,
        "FANOTIFY_FILE": .fanotifyFile,
        "FANOTIFY_MARK": .fanotifyMark,
        "SIGNAL": .signal,
        "NETLINK_SK": .netlinkSk,
        "NS_FILES": .nsFiles,
        "TUNFILE": .tunfile,
        "CGROUP": .cgroup,
        "TIMERFD": .timerfd,
        "CPUINFO": .cpuinfo,
        "USERNS": .userns,
        "SECCOMP": .seccomp,
        "BINFMT_MISC": .binfmtMisc,
        "AUTOFS": .autofs,
        "FILES": .files,
        "MEMFD_INODE": .memfdInode,
        "TIMENS": .timens,
        "PIDNS": .pidns,
        "BPFMAP_FILE": .bpfmapFile,
        "BPFMAP_DATA": .bpfmapData,
        "APPARMOR": .apparmor,
        "STATS": .stats,
        "IRMAP_CACHE": .irmapCache,
        "KDAT": .kdat,
    ]

    private static let namesByValue: [ImageMagic: String] = Dictionary(
        uniqueKeysWithValues: all.map { ($0.value, $0.key) })

    /// CRIU's name for this magic (`"CORE"`, `"IMG_COMMON"`, ...), or nil if it is not a known one.
    public var name: String? {
        Self.namesByValue[self]
    }

    /// The head magic CRIU writes before this type magic: nil for `.inventory`, `.imgService` for
    /// `.stats` and `.irmapCache`, `.imgCommon` for everything else. Only meaningful for type
    /// magics of protobuf images (not for the head magics, ``crtoolsImagesV1_1`` or `.kdat`).
    public var headMagic: ImageMagic? {
        switch self {
        case .inventory: nil
        case .stats, .irmapCache: .imgService
        default: .imgCommon
        }
    }
}

extension ImageMagic: CustomStringConvertible {
    public var description: String {
        name ?? "0x" + String(rawValue, radix: 16, uppercase: true)
    }
}
