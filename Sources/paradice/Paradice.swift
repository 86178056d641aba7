import ArgumentParser

@main
struct Paradice: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "paradice",
        abstract: "I/O paravirtualization at the device-file boundary.",
        subcommands: [SpecCommand.self, Run.self, Devices.self, Focus.self, Cat.self, Guest.self, Lines.self]
    )
}
