// swift-tools-version: 6.2
import PackageDescription

// Module graph (edges point down; see ../shared/DESIGN.md §2):
//
//   loadgen (executable: commands and rendering only)
//     ├── LoadgenMetrics (the /metrics page: swift-prometheus, NIOHTTP1; watches the coordinator and the agent)
//     ├── LoadgenReport (HTML pages with SVG charts of stored runs)
//     ├── LoadgenCoordinator ── LoadgenStore ── GRDB
//     ├── LoadgenAgent
//     │     └── LoadgenWorkloads ── CLoadgen (C: clocks, io_uring), Subprocess, NIO, NIOSSL, NIOHTTP2
//     └── LoadgenWire (NIO framing, handshake, HMAC over the system libcrypto, mutual TLS)
//           └── LoadgenCore (specs, metrics, wire messages, pure state; no I/O)

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

let histogram: Target.Dependency = .product(name: "Histogram", package: "hdrhistogram-swift")
let nioCore: Target.Dependency = .product(name: "NIOCore", package: "swift-nio")
let nioPosix: Target.Dependency = .product(name: "NIOPosix", package: "swift-nio")
let logging: Target.Dependency = .product(name: "Logging", package: "swift-log")

let package = Package(
    name: "loadgen",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "loadgen", targets: ["loadgen"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.3"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        // HTTP/2 for the async fetch client (--http2): frames, HPACK, flow control and the peer's SETTINGS.
        .package(url: "https://github.com/apple/swift-nio-http2", from: "1.46.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        .package(url: "https://github.com/swiftlang/swift-subprocess", from: "1.0.2"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        // Exact: the committed Sources/LoadgenCore/Generated code was made by this version's plugin.
        .package(url: "https://github.com/apple/swift-protobuf", exact: "1.39.0"),
        // The /metrics page (--metrics-listen): counters and gauges in Prometheus's text format.
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        .target(name: "CLoadgen"),
        .systemLibrary(name: "COpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),
        .target(name: "LoadgenCore", dependencies: [histogram, "CLoadgen", .product(name: "SwiftProtobuf", package: "swift-protobuf")],
                swiftSettings: swiftSettings),
        // Fuzz targets over LoadgenCore's decoders and parsers; `loadgen-fuzz` runs one under libFuzzer
        // (deploy/fuzz/run.sh), the tests replay Tests/Fuzz/ through them.
        .target(name: "LoadgenFuzz", dependencies: ["LoadgenCore"], swiftSettings: swiftSettings),
        .executableTarget(name: "loadgen-fuzz", dependencies: ["LoadgenFuzz"], swiftSettings: swiftSettings),
        .target(
            name: "LoadgenWorkloads",
            dependencies: [
                "LoadgenCore", "CLoadgen", "COpenSSL", nioCore, nioPosix,
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "LoadgenWire",
            dependencies: ["LoadgenCore", "COpenSSL", nioCore, .product(name: "NIOSSL", package: "swift-nio-ssl")],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "LoadgenStore",
            dependencies: ["LoadgenCore", .product(name: "GRDB", package: "GRDB.swift")],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "LoadgenReport",
            dependencies: ["LoadgenCore", "LoadgenStore"],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "LoadgenMetrics",
            dependencies: ["LoadgenCore", "LoadgenAgent", "LoadgenCoordinator", nioCore, nioPosix, .product(name: "NIOHTTP1", package: "swift-nio"),
                           .product(name: "Prometheus", package: "swift-prometheus")],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "LoadgenAgent",
            dependencies: ["LoadgenCore", "LoadgenWorkloads", "LoadgenWire", nioCore, nioPosix, logging],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "LoadgenCoordinator",
            dependencies: ["LoadgenCore", "LoadgenAgent", "LoadgenWorkloads", "LoadgenStore", "LoadgenWire", nioCore, nioPosix, logging],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "loadgen",
            dependencies: [
                "LoadgenCore", "LoadgenWorkloads", "LoadgenAgent", "LoadgenCoordinator", "LoadgenStore", "LoadgenWire",
                "LoadgenMetrics", "LoadgenReport", logging, .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "loadgen-bench",
            dependencies: [
                "LoadgenCore", "LoadgenWire", nioCore, nioPosix,
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "LoadgenTests",
            dependencies: [
                "LoadgenCore", "LoadgenWorkloads", "LoadgenAgent", "LoadgenCoordinator", "LoadgenStore", "LoadgenWire",
                "LoadgenMetrics", "LoadgenReport", "loadgen", "LoadgenFuzz", .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOTestUtils", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
            ],
            swiftSettings: swiftSettings
        ),
    ]
)
