import ArgumentParser
import ParadiceSpec
import ParadiceToolSupport

extension SpecCommand {
    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show a class's ioctls, or one ioctl's layout with offsets and the shape of its memory plan.")
        @OptionGroup var options: SpecOptions
        @Argument(help: "Class name.") var className: String
        @Argument(help: "Ioctl name.") var ioctlName: String?

        func run() throws {
            let specs = try options.load()
            guard let c = specs.specClass(named: className) else { throw ValidationError("no class '\(className)'") }
            guard let name = ioctlName else {
                for ioctl in c.ioctls {
                    let number = (try? ioctl.command(in: specs, parameters: specs.sampleParameters(ioctl))) ?? 0
                    let params = ioctl.isFamily ? "(" + ioctl.parameters.map(\.name).joined(separator: ", ") + ")" : ""
                    print(pad(ioctl.name + params, 34) + pad("0x" + String(number, radix: 16), 12) + ioctl.argument.description)
                }
                return
            }
            guard let ioctl = c.ioctls.first(where: { $0.name == name }) else { throw ValidationError("no ioctl '\(name)' in class \(className)") }
            print(PlanShape(specs: specs).describe(ioctl))
        }
    }
}
