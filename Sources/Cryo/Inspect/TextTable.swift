import Foundation

/// A plain-text table for people: a header row, then rows, columns padded to their widest
/// cell and separated by two spaces; numeric columns are right-aligned.
public struct TextTable {
    /// The column titles.
    public let headers: [String]
    /// Which columns are right-aligned.
    public let rightAligned: Set<Int>
    /// The rows so far.
    public private(set) var rows: [[String]] = []

    /// A table with these column titles; `right` lists the right-aligned columns.
    public init(_ headers: [String], right: Set<Int> = []) {
        self.headers = headers
        self.rightAligned = right
    }

    /// Adds a row (missing cells are empty).
    public mutating func add(_ cells: [String]) { rows.append(cells) }

    /// The table as lines of text, each prefixed by `indent`.
    public func render(indent: String = "") -> String {
        let all = [headers] + rows
        var widths = [Int](repeating: 0, count: headers.count)
        for row in all { for (i, c) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], c.count) } }
        var out = ""
        for row in all {
            var line = indent
            for i in 0..<headers.count {
                let cell = i < row.count ? row[i] : ""
                let padding = String(repeating: " ", count: widths[i] - cell.count)
                let last = i == headers.count - 1
                line += rightAligned.contains(i) ? padding + cell : (last ? cell : cell + padding)
                if !last { line += "  " }
            }
            while line.hasSuffix(" ") { line.removeLast() }
            out += line + "\n"
        }
        return out
    }
}

/// Byte counts for people: `0 B`, `512 B`, `4.0 KiB`, `1.5 GiB`.
public func humanBytes(_ n: UInt64) -> String {
    if n < 1024 { return "\(n) B" }
    var v = Double(n)
    for unit in ["KiB", "MiB", "GiB", "TiB", "PiB"] {
        v /= 1024
        if v < 1024 { return String(format: "%.1f ", v) + unit }
    }
    return String(format: "%.1f EiB", v / 1024)
}

/// `v` in lowercase hex, zero-padded to `width` digits, with `0x` in front if `prefix`.
public func hexString(_ v: UInt64, width: Int = 0, prefix: Bool = false) -> String {
    let h = String(v, radix: 16)
    return (prefix ? "0x" : "") + (h.count >= width ? h : String(repeating: "0", count: width - h.count) + h)
}
