@testable import ALSAPlugin
@testable import DRMPlugin
@testable import KVMPlugin
import ParadiceEngine
import ParadiceSpec
import Testing
@testable import V4L2Plugin

/// A plug-in names the ioctls it acts on; a name the specs do not have would make it silently do nothing.
@Test func everyIoctlAPluginActsOnIsInTheSpecs() {
    func missing<Kind: RawRepresentable & CaseIterable>(_: Kind.Type) -> [String] where Kind.RawValue == String {
        Kind.allCases.map(\.rawValue).filter { specs.ioctl(named: $0) == nil }
    }
    #expect(missing(DRMIoctl.self) == [])
    #expect(missing(V4L2Ioctl.self) == [])
    #expect(missing(ALSAIoctl.self) == [])
    #expect(missing(KVMIoctl.self) == [])
}

/// Plug-ins build their layouts once, for every file of the backend.
@Test func aPluginsLayoutIsMadeOnce() {
    var made = 0
    let derived = SpecDerived<Int> { _ in made += 1; return made }
    #expect(derived(specs) == 1 && derived(specs) == 1 && made == 1)
}
