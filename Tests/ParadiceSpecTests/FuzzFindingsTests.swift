import Foundation
import ParadicePlan
import ParadiceSpec
import ParadiceSystem
import PlannerFuzzing
import Testing

/// The planner fuzz harness's findings (Tests/Fuzz/crashes/planner) and seeds (Tests/Fuzz/corpus/planner),
/// replayed through the same checks the harness makes: a plan that breaks what the engine relies on traps.
@Suite("Planner fuzz findings")
struct FuzzFindingsTests {
    static let fuzzFolder: String = {
        let parts = #filePath.split(separator: "/").dropLast(2)
        return "/" + parts.joined(separator: "/") + "/Fuzz"
    }()

    static func inputs(_ folder: String) -> [String] {
        let path = fuzzFolder + "/" + folder
        return ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted().map { path + "/" + $0 }
    }

    static let fuzzer = PlannerFuzzer(specs: repositorySpecs)

    static func bytes(_ path: String) throws -> [UInt8] {
        [UInt8](try #require(FileManager.default.contents(atPath: path)))
    }

    @Test func aPointerArgumentOutsideUserSpaceIsEFAULT() throws {
        let outcome = Self.fuzzer.run(try Self.bytes(Self.fuzzFolder + "/crashes/planner/plain-pointer-outside-user-space"))
        #expect(outcome == .refused(errno: .badAddress))
    }

    @Test func aLoadFarPastARegionIsNil() throws {
        // The harness also asks CallView.load for offsets near Int.max: once an overflow trap.
        #expect(Self.fuzzer.run(try Self.bytes(Self.fuzzFolder + "/crashes/planner/load-offset-overflow")) != .tooShort)
    }

    @Test func everyCommittedFindingRunsClean() throws {
        let findings = Self.inputs("crashes/planner")
        #expect(!findings.isEmpty)
        for path in findings { Self.fuzzer.run(try Self.bytes(path)) }
    }

    @Test func everySeedPlansOrIsRefusedWithAnErrno() throws {
        let seeds = Self.inputs("corpus/planner")
        #expect(seeds.count > 10)
        var planned = 0
        for path in seeds {
            if case .planned = Self.fuzzer.run(try Self.bytes(path)) { planned += 1 }
        }
        // Seeds recorded from real calls: most of them plan.
        #expect(planned * 2 > seeds.count)
    }
}
