// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "Paradice",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "paradice", targets: ["paradice"]),
        .library(name: "ParadiceSpec", targets: ["ParadiceSpec"]),
        .library(name: "ParadicePlan", targets: ["ParadicePlan"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // Specs (data) → spec compiler: lexer, parser, type checker, layout.
        .target(name: "ParadiceSpec"),
        // Memory plans: which guest regions one ioctl call may read and write.
        .target(name: "ParadicePlan", dependencies: ["ParadiceSpec", "CParadice"]),
        // Small C wrappers for calls Swift cannot import (process_vm_readv, …).
        .target(name: "CParadice"),
        // Checks spec layouts and numbers against the real C headers.
        .target(name: "ParadiceVerify", dependencies: ["ParadiceSpec"]),
        .executableTarget(
            name: "paradice",
            dependencies: [
                "ParadiceSpec", "ParadicePlan", "ParadiceVerify",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(
            name: "ParadiceSpecTests",
            dependencies: ["ParadiceSpec", "ParadicePlan", "ParadiceVerify"]
        ),
    ]
)
