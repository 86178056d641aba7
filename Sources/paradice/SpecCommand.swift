import ArgumentParser
import ParadiceSpec
import ParadiceToolSupport
import ParadiceVerify
#if canImport(Glibc)
import Glibc
#endif

struct SpecOptions: ParsableArguments {
    @Option(name: .long, help: "The spec folder (default: $PARADICE_SPECS, else the nearest Specs/ above the current folder, else the one beside the program).")
    var specs: String?

    func load() throws -> SpecSet {
        try loadSpecs { try SpecSet.load(directory: try specFolder()) }
    }

    func specFolder() throws -> String {
        if let found = specs ?? SpecLocator.defaultFolder() { return found }
        throw ValidationError("no spec folder found; pass --specs DIR")
    }
}

/// Prints diagnostics as `file:line:col: message` and exits 1 when a spec does not compile.
func loadSpecs(_ body: () throws -> SpecSet) throws -> SpecSet {
    do {
        return try body()
    } catch let errors as SpecErrors {
        for d in errors.diagnostics { printError(d.description) }
        printError("\(errors.diagnostics.count) error\(errors.diagnostics.count == 1 ? "" : "s")")
        throw ExitCode(1)
    }
}

func printError(_ s: String) {
    var line = s + "\n"
    _ = line.withUTF8 { write(2, $0.baseAddress, $0.count) }
}

struct SpecCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spec",
        abstract: "Check, list, show and verify ioctl specs.",
        subcommands: [Check.self, List.self, Show.self, Verify.self]
    )

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Parse and typecheck spec files (one namespace); errors as file:line:col: message.")

        @Argument(help: "Spec files.") var files: [String]

        func run() throws {
            let specs = try loadSpecs { try SpecSet.load(paths: files) }
            let ioctls = specs.ioctls.count
            let structs = specs.records.count
            print("ok: \(files.count) file\(files.count == 1 ? "" : "s"), \(structs) structs and unions, \(ioctls) ioctls")
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the classes with their struct and ioctl counts.")
        @OptionGroup var options: SpecOptions

        func run() throws {
            let specs = try options.load()
            print(pad("class", 10) + pad("structs", 9) + pad("ioctls", 8) + pad("plug-in", 9) + "devices")
            for c in specs.classes.sorted(by: { $0.name < $1.name }) {
                print(pad(c.name, 10) + pad(String(c.records.count), 9) + pad(String(c.ioctls.count), 8)
                      + pad(c.plugin ?? "-", 9) + c.devices.joined(separator: " "))
            }
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Compare every struct layout, constant and ioctl number with the C headers (a generated probe).")
        @OptionGroup var options: SpecOptions
        @Argument(help: "Spec files (default: every spec of the folder).") var files: [String] = []
        @Option(help: "The C compiler.") var cc = "cc"

        func run() throws {
            let specs = try files.isEmpty ? options.load() : loadSpecs { try SpecSet.load(paths: files) }
            let reports = Verifier(compiler: cc).verify(specs)
            var failed = 0
            for report in reports {
                for m in report.mismatches { printError(m.description) }
                failed += report.mismatches.count
                let name = report.className ?? baseName(report.file)
                let status = report.mismatches.isEmpty ? "ok" : "\(report.mismatches.count) MISMATCH\(report.mismatches.count == 1 ? "" : "ES")"
                let against = report.source == "headers" ? "" : " (against \(baseName(report.source)))"
                print(pad(name, 10) + "\(report.structs) structs, \(report.fields) fields, \(report.constants) constants, \(report.ioctls) ioctls checked\(against): \(status)")
            }
            if failed > 0 {
                print("verify: \(failed) mismatch\(failed == 1 ? "" : "es")")
                throw ExitCode(1)
            }
            print("verify: all specs match the headers")
        }
    }
}

func baseName(_ path: String) -> String { path.split(separator: "/").last.map(String.init) ?? path }
