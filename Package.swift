// swift-tools-version:6.0
import PackageDescription

// Release builds of the per-call path drop dynamic exclusivity checks: they cost ~10% of a forwarded ioctl.
let hotPath: [SwiftSetting] = [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]

// Linux only (x86-64 is what the specs are verified on): the specs describe the Linux ioctl ABI and the code
// uses Linux interfaces (process_vm_readv, /proc, glibc's symbols for LD_PRELOAD), so no Apple platform is declared.
let package = Package(
    name: "Paradice",
    products: [
        .executable(name: "paradice", targets: ["paradice"]),
        .executable(name: "paradice-backend", targets: ["paradice-backend"]),
        .executable(name: "paradice-bench", targets: ["paradice-bench"]),
        // The frontend daemon of a guest kernel's Paradice module (C only: no Swift runtime in the guest).
        .executable(name: "paradice-guestd", targets: ["paradice-guestd"]),
        .library(name: "ParadiceClient", targets: ["ParadiceClient"]),
        // LD_PRELOAD frontend for unmodified programs (C only: no Swift runtime in the program).
        .library(name: "ParadicePreload", type: .dynamic, targets: ["ParadicePreload"]),
        .library(name: "ParadiceSpec", targets: ["ParadiceSpec"]),
        .library(name: "ParadicePlan", targets: ["ParadicePlan"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        // The policy file's YAML (libyaml inside): every node keeps its line and column for error messages.
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
    ],
    targets: [
        // Specs (data) → spec compiler: lexer, parser, type checker, layout.
        .target(name: "ParadiceSpec"),
        // Memory plans: which guest regions one ioctl call may read and write.
        .target(name: "ParadicePlan", dependencies: ["ParadiceSpec", "ParadiceSystem", "CParadice"], swiftSettings: hotPath),
        // Small C wrappers for calls Swift cannot import (process_vm_readv, …).
        .target(name: "CParadice"),
        // TLS 1.3 (mutual certificates or a pre-shared key) on OpenSSL, shared by the backend and the frontend core.
        .target(name: "ParadiceTLS", dependencies: ["CParadice"], linkerSettings: [.linkedLibrary("ssl"), .linkedLibrary("crypto"), .linkedLibrary("pthread")]),
        // Checks spec layouts and numbers against the real C headers.
        .target(name: "ParadiceVerify", dependencies: ["ParadiceSpec"]),
        // Raw system calls behind one small layer, and a typed Errno (the EINTR policy lives there).
        .target(name: "ParadiceSystem", dependencies: ["CParadice"], swiftSettings: hotPath),
        // The wire protocol: frames built from the C structs of paradice_wire.h.
        .target(name: "ParadiceWire", dependencies: ["ParadiceSystem", "CParadice"], swiftSettings: hotPath),
        // Transports behind one interface: unix sockets and TCP.
        .target(name: "ParadiceTransport", dependencies: ["ParadiceWire", "ParadiceSystem", "CParadice", "ParadiceTLS"], swiftSettings: hotPath),
        // The generic forwarding engine (backend side): sessions, handles, spec-driven ioctls.
        .target(
            name: "ParadiceEngine",
            dependencies: ["ParadiceSpec", "ParadicePlan", "ParadiceWire", "ParadiceTransport", "ParadiceSystem", "CParadice",
                           .product(name: "Logging", package: "swift-log"), .product(name: "Yams", package: "Yams")],
            swiftSettings: hotPath
        ),
        // The frontend core (C): connection, request/reply matching, ioctl plan execution, descriptor slots,
        // mirrors, events and the reply checks of the trust model, behind a guest-memory interface. Every
        // frontend is built on it. It must link into the preload: no Swift, nothing beyond libc and pthreads.
        .target(name: "ParadiceFrontendCore", dependencies: ["CParadice", "ParadiceTLS"]),
        // The preload frontend: class-agnostic, it executes the plans the backend sends.
        .target(name: "ParadicePreload", dependencies: ["ParadiceFrontendCore", "CParadice"], linkerSettings: [.linkedLibrary("dl"), .linkedLibrary("pthread"),
                                 .unsafeFlags(["-nostartfiles", "-static-stdlib", "-Xlinker", "--as-needed"])]),
        // The guest daemon: registers a backend's devices as nodes of the guest kernel's module (Kernel/paradice)
        // and serves their calls on the frontend core, reaching callers through the module (paradice_kernel.h).
        // -nostartfiles drops swiftrt.o (which needs the Swift runtime) but keeps the C start files; the static
        // stdlib it then names adds nothing: the daemon runs on libc and pthreads alone.
        .executableTarget(name: "paradice-guestd", dependencies: ["ParadiceFrontendCore", "CParadice"],
                          linkerSettings: [.linkedLibrary("pthread"),
                                           .unsafeFlags(["-nostartfiles", "-static-stdlib", "-Xlinker", "--as-needed"])]),
        // The client library (frontend side): remote files that behave like local ones.
        .target(name: "ParadiceClient", dependencies: ["ParadiceFrontendCore", "ParadicePlan", "ParadiceWire", "ParadiceTransport", "ParadiceSystem", "CParadice"],
                swiftSettings: hotPath),
        // Plug-ins: per-class code for what a spec cannot say (Plugins/<Class>/).
        .target(name: "KVMPlugin", dependencies: ["ParadiceEngine", "ParadicePlan"], path: "Plugins/KVM"),
        .target(name: "V4L2Plugin", dependencies: ["ParadiceEngine", "ParadicePlan", "ParadiceSpec", "ParadiceSystem"], path: "Plugins/V4L2"),
        .target(name: "EvdevPlugin", dependencies: ["ParadiceEngine", "ParadicePlan", "ParadiceSpec", "ParadiceSystem", "ParadiceTransport", "CParadice"], path: "Plugins/Evdev"),
        .target(name: "ALSAPlugin", dependencies: ["ParadiceEngine"], path: "Plugins/ALSA"),
        .target(name: "DRMPlugin", dependencies: ["ParadiceEngine", "ParadicePlan", "ParadiceSpec", "ParadiceSystem", "CParadice"], path: "Plugins/DRM"),
        .executableTarget(
            name: "paradice-backend",
            dependencies: ["ParadiceEngine", "ParadiceSpec", "ParadiceTransport", "KVMPlugin", "V4L2Plugin",
                           "EvdevPlugin", "ALSAPlugin", "DRMPlugin",
                           .product(name: "ArgumentParser", package: "swift-argument-parser"),
                           .product(name: "Logging", package: "swift-log")]
        ),
        // What the command-line tools share: where the program and the specs are, text helpers.
        .target(name: "ParadiceToolSupport"),
        .executableTarget(
            name: "paradice",
            dependencies: [
                "ParadiceSpec", "ParadicePlan", "ParadiceVerify", "ParadiceClient", "ParadiceTransport", "ParadiceWire", "ParadiceSystem", "CParadice",
                "ParadiceToolSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // Forwarded calls timed against native ones and the raw transport (BENCHMARKS.md); not part of the product CLI.
        .executableTarget(
            name: "paradice-bench",
            dependencies: [
                "ParadiceSpec", "ParadicePlan", "ParadiceClient", "ParadiceTransport", "ParadiceWire", "CParadice",
                "ParadiceToolSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(
            name: "ParadiceEngineTests",
            dependencies: ["ParadiceClient", "ParadiceFrontendCore", "CParadice", "ParadiceEngine", "ParadiceSpec", "ParadiceWire", "ParadiceSystem",
                           "ParadiceTransport", "ParadiceTLS"],
            exclude: ["Programs"]   // C programs the tests compile and run under `paradice run`
        ),
        .testTarget(name: "ParadiceSystemTests", dependencies: ["ParadiceSystem"]),
        .testTarget(name: "ParadiceTLSTests", dependencies: ["ParadiceTLS"]),
        .testTarget(name: "ParadiceToolTests", dependencies: ["ParadiceToolSupport"]),
        .testTarget(
            name: "PluginTests",
            dependencies: ["V4L2Plugin", "KVMPlugin", "EvdevPlugin", "ALSAPlugin", "DRMPlugin", "ParadiceEngine", "ParadicePlan", "ParadiceSpec"]
        ),
        .testTarget(
            name: "ParadiceSpecTests",
            dependencies: ["ParadiceSpec", "ParadicePlan", "ParadiceSystem", "ParadiceVerify", "PlannerFuzzing"],
            exclude: ["testdata"]   // golden spec files the diagnostics test reads
        ),
        // What the planner fuzz harness does with one input, shared with the tests that replay its findings.
        .target(name: "PlannerFuzzing", dependencies: ["ParadiceSpec", "ParadicePlan", "ParadiceSystem"], path: "Tests/Fuzz/PlannerFuzzing"),
    ]
)

// libFuzzer harnesses (scripts/fuzz.sh builds them with -sanitize=fuzzer,address into .build-fuzz). They exist
// only when PARADICE_FUZZ is set: libFuzzer supplies their main, so a plain build could not link them.
if Context.environment["PARADICE_FUZZ"] != nil {
    let harness: [SwiftSetting] = [.unsafeFlags(["-parse-as-library"])]
    package.targets += [
        .target(name: "FuzzDriver", path: "Tests/Fuzz/Driver"),
        .executableTarget(
            name: "fuzz-frames",
            dependencies: ["FuzzDriver", "ParadiceEngine", "ParadiceTransport", "ParadiceWire", "CParadice",
                           .product(name: "Logging", package: "swift-log")],
            path: "Tests/Fuzz/Frames", swiftSettings: harness
        ),
        .executableTarget(name: "fuzz-planner", dependencies: ["FuzzDriver", "PlannerFuzzing"], path: "Tests/Fuzz/Planner", swiftSettings: harness),
    ]
    package.products += [
        .executable(name: "fuzz-frames", targets: ["fuzz-frames"]),
        .executable(name: "fuzz-planner", targets: ["fuzz-planner"]),
    ]
}
