@testable import Cryo
import Glibc
import XCTest

/// `InetAddress` must give the kernel back the very address it read, in the words crit reads.
final class InetAddressTests: XCTestCase {
    /// Binds a new socket of `family`/`type` to `text` (port 0) through `InetAddress`, and
    /// returns what getsockname then says.
    private func bound(_ family: Int32, _ text: String, type: Int32 = Int32(SOCK_DGRAM.rawValue)) throws -> InetAddress {
        let fd = socket(family, type, 0)
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { close(fd) }
        let words = try XCTUnwrap(CritText.parseIPAddress(text))
        let address = InetAddress(family: family, words: words, port: 0)
        XCTAssertTrue(address.isUnspecified == (text == "0.0.0.0" || text == "::"))
        XCTAssertEqual(address.withSockaddr { bind(fd, $0, $1) }, 0, "bind \(text): errno \(errno)")
        return InetAddress.local(of: fd, family: family)
    }

    func testIPv4RoundTrip() throws {
        let a = try bound(AF_INET, "127.0.0.1")
        XCTAssertEqual(a.words, CritText.parseIPAddress("127.0.0.1"))
        XCTAssertNotEqual(a.port, 0)
        XCTAssertFalse(a.isUnspecified)
        XCTAssertEqual(a.description, "127.0.0.1:\(a.port)")
    }

    func testIPv6RoundTrip() throws {
        let a = try bound(AF_INET6, "::1", type: Int32(SOCK_STREAM.rawValue))
        XCTAssertEqual(a.words.count, 4)
        XCTAssertEqual(a.words, CritText.parseIPAddress("::1"))
        XCTAssertEqual(a.description, "[::1]:\(a.port)")
    }

    func testUnboundSocketIsUnspecifiedAndUnconnected() {
        let fd = socket(AF_INET6, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        XCTAssertTrue(InetAddress.local(of: fd, family: AF_INET6).isUnspecified)
        XCTAssertNil(InetAddress.peer(of: fd))
        XCTAssertEqual(InetAddress(family: AF_INET).words, [0])
    }
}
