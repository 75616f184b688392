// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "Cryo",
    products: [
        .executable(name: "cryo", targets: ["cryo"]),
        .library(name: "Cryo", targets: ["Cryo"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
    ],
    targets: [
        // Only what Swift cannot express: ptrace/syscall wrappers, wait macros, the code a
        // freshly cloned child runs before the restorer takes it over, kernel UAPI structs.
        .target(name: "CLinux"),
        .target(
            name: "Cryo",
            dependencies: [
                "CLinux",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            exclude: ["Image/Proto/schemas"]
        ),
        .executableTarget(
            name: "cryo",
            dependencies: [
                "Cryo",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(name: "CryoTests", dependencies: ["Cryo"]),
    ],
    // Swift 5 mode: the tool drives ptrace from one thread and shares no state across
    // threads, so strict-concurrency checking would only add annotations.
    swiftLanguageModes: [.v5]
)
