import FuzzDriver
import ParadiceSpec
import PlannerFuzzing

/// libFuzzer harness: every spec'd ioctl, of every class, planned against arbitrary argument bytes.
/// The input format is PlannerFuzzer's.

/// The repository's specs, compiled once per process.
let fuzzer: PlannerFuzzer = {
    let specs = #filePath.split(separator: "/").dropLast(4).joined(separator: "/")
    do {
        return PlannerFuzzer(specs: try SpecSet.load(directory: "/" + specs + "/Specs"))
    } catch {
        fatalError("the repository specs do not compile:\n\(error)")
    }
}()

/// Compiles the specs before the first input, so that their time counts against no input's timeout.
@_cdecl("LLVMFuzzerInitialize")
public func fuzzInitialize(_ argc: UnsafeMutablePointer<Int32>?, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?) -> Int32 {
    _ = fuzzer
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let input = size > 0 && data != nil ? Array(UnsafeBufferPointer(start: data, count: size)) : []
    fuzzer.run(input)
    return 0
}

/// The entry point SwiftPM gives this executable: libFuzzer's driver, with this file's callback.
@_cdecl("fuzz_planner_main")
public func harnessMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv, fuzzOneInput)
}
