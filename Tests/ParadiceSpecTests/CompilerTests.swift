import ParadicePlan
import ParadiceSpec
import ParadiceVerify
import Testing

@Suite("Spec compiler")
struct CompilerTests {
    func compile(_ text: String, file: String = "t.spec") throws -> SpecSet {
        try SpecSet.compile(sources: [(file, text)])
    }

    @Test func syncRangesAndConditionsCompile() throws {
        let specs = try compile("""
            const PAGE = 4096
            ioctl E = _IO('x', 5) sync in PAGE length 2 * PAGE when $stream == 1 sync out 0 length PAGE
            """)
        let syncs = try #require(specs.ioctl(named: "E")).syncs
        #expect(syncs.map(\.direction) == [.input, .output] && syncs.map(\.range) == [4096..<12288, 0..<4096])
        #expect(syncs.map { $0.condition == nil } == [false, true])
    }

    @Test func readShapesGiveTheReadUnit() throws {
        func unit(_ item: String) throws -> Int {
            let specs = try compile("""
                struct event {
                  time u64[2]
                  code u16
                  value s32
                }
                class c {
                  devices "/dev/x"
                  \(item)
                }
                """)
            return try #require(specs.specClass(named: "c")).readUnit
        }
        #expect(try unit("read stream") == 1)
        #expect(try unit("read records event") == 24)   // padded to its alignment, as C lays it out
        #expect(try unit("") == 0)
        #expect(throws: (any Error).self) { try unit("read records nosuch") }
        #expect(throws: (any Error).self) { try unit("read lines") }
        // The repository's: a tty is a stream, evdev's reads whole struct input_events (24 bytes on x86-64).
        #expect(repositorySpecs.specClass(named: "tty")?.readUnit == 1)
        #expect(repositorySpecs.specClass(named: "evdev")?.readUnit == 24)
        #expect(repositorySpecs.specClass(named: "kvm")?.readUnit == 0)
    }

    @Test func mmapRefusalsAnswerInOrderOverOffsetAndLength() throws {
        let specs = try compile("""
            const STATUS = 0x80000000
            class c {
              devices "/dev/x"
              mmap refuse offset >= STATUS errno ENXIO
              mmap refuse length > 1M || offset % 4096 != 0 errno EINVAL
            }
            """)
        let c = try #require(specs.specClass(named: "c"))
        #expect(c.mmapRefusals.map(\.errno) == [6, 22])
        #expect(specs.mmapRefusal(in: c, offset: 0, length: 4096) == nil)
        #expect(specs.mmapRefusal(in: c, offset: 0x7fff_f000, length: 4096) == nil)
        #expect(specs.mmapRefusal(in: c, offset: 0x8000_0000, length: 4096) == 6)
        #expect(specs.mmapRefusal(in: c, offset: 0x8000_0000, length: 2 << 20) == 6)   // the first that holds
        #expect(specs.mmapRefusal(in: c, offset: 0, length: 2 << 20) == 22)
        #expect(specs.mmapRefusal(in: c, offset: 12, length: 4096) == 22)
        #expect(specs.mmapRefusal(in: c, offset: .max, length: 1) == 6)                // past Int64: refused
        // A class without the clause maps everything.
        let plain = try compile("class d { devices \"/dev/y\" }")
        #expect(plain.mmapRefusal(in: try #require(plain.specClass(named: "d")), offset: 1 << 40, length: 4096) == nil)
    }

    @Test func statesAreRememberedFromArrayElementsAndForgotten() throws {
        let specs = try compile("""
            const FIRST = 8
            struct item { lo u32; hi u32 }
            struct params { flags u32; items item[4]; count u16 }
            class c {
              devices "/dev/x"
              state width unset errno EBADFD
              state depth unset errno EIO
              path fast "/dev/x1" "/dev/y/*c"
            }
            ioctl SET = _IOWR('x', 1, params) remember width = items[9 - FIRST].lo * 2 when count > 0 remember depth = count
            ioctl FREE = _IO('x', 2) forget depth forget width
            """)
        let c = try #require(specs.specClass(named: "c"))
        #expect(c.states.map(\.name) == ["width", "depth"] && c.states.map(\.unsetErrno) == [77, 5])
        let set = try #require(specs.ioctl(named: "SET"))
        #expect(set.remembers.map(\.index) == [0, 1] && set.remembers.map { $0.condition == nil } == [false, true])
        #expect(set.remembers[0].value.description == "(items[(9 - FIRST)].lo * 2)")
        #expect(try #require(specs.ioctl(named: "FREE")).forgets == [1, 0])
        #expect(c.pathVariables.map(\.name) == ["fast"])
        #expect(["/dev/x1", "/dev/y/0c", "/dev/y/0p", "/dev/x10", "/dev/y/z/0c"].map { c.pathVariableValues(for: $0) } == [[1], [1], [0], [0], [0]])
    }

    @Test func alsaRefusesTheStatusAndControlPagesOnly() throws {
        let alsa = try #require(repositorySpecs.specClass(named: "alsa"))
        let enxio: Int32 = 6
        for name in ["STATUS_OLD", "CONTROL_OLD", "STATUS_NEW", "CONTROL_NEW"] {
            let offset = try #require(try repositorySpecs.constantValue("SNDRV_PCM_MMAP_OFFSET_" + name))
            #expect(repositorySpecs.mmapRefusal(in: alsa, offset: UInt64(offset), length: 4096) == enxio, "\(name)")
        }
        let data = try #require(try repositorySpecs.constantValue("SNDRV_PCM_MMAP_OFFSET_DATA"))
        #expect(repositorySpecs.mmapRefusal(in: alsa, offset: UInt64(data), length: 64 << 10) == nil)
        #expect(repositorySpecs.mmapRefusal(in: alsa, offset: 0x8000_0000 - 4096, length: 4096) == nil)
    }

    @Test func cLayoutRules() throws {
        let s = try compile("""
            struct natural { a u8; b u64; c u16 }
            struct packed_one packed { a u8; b u64; c u16 }
            struct aligned align(16) { a u32 }
            struct field_aligned { a u32; b u32 align(8) }
            union u { a u8; b u64; c char[13] }
            struct flex { n u32; items u64[n] }
            struct strs { name char[7]; x u32 }
            """)
        #expect(s.record(named: "natural")!.size == 24)
        #expect(s.record(named: "natural")!.field(named: "c")!.offset == 16)
        #expect(s.record(named: "packed_one")!.size == 11)
        #expect(s.record(named: "packed_one")!.alignment == 1)
        #expect(s.record(named: "aligned")!.size == 16)
        #expect(s.record(named: "field_aligned")!.field(named: "b")!.offset == 8)
        #expect(s.record(named: "u")!.size == 16)
        #expect(s.record(named: "flex")!.size == 8)
        #expect(s.record(named: "flex")!.field(named: "items")!.offset == 8)
        #expect(s.record(named: "strs")!.field(named: "x")!.offset == 8)
    }

    @Test func ioctlNumbersComeFromTheComputedSize() throws {
        let s = try compile("""
            struct v4l2_capability_like { driver char[16]; card char[32]; bus_info char[32]; version u32; capabilities u32; device_caps u32; reserved u32[3] }
            class c { devices "/dev/x" }
            ioctl Q = _IOR('V', 0, v4l2_capability_like)
            ioctl R(len) = _IOC(_IOC_READ, 'E', 0x06, len) arg ptr<out, char[len]>
            ioctl T = 0x5401 arg ptr<out, u32>
            """)
        #expect(try s.ioctl(named: "Q")!.command(in: s, parameters: [:]) == 0x8068_5600)   // VIDIOC_QUERYCAP
        #expect(try s.ioctl(named: "R")!.command(in: s, parameters: ["len": 256]) == 0x8100_4506)
        #expect(s.match(command: 0x5401, inClass: "c")?.ioctl.name == "T")
        #expect(s.match(command: 0x8100_4506, inClass: "c")?.parameters == ["len": 256])
    }

    @Test func repositorySpecsMeetTheFloors() throws {
        let counts = Dictionary(uniqueKeysWithValues: repositorySpecs.classes.map { ($0.name, $0.ioctls.count) })
        #expect(counts["drm", default: 0] >= 60)
        #expect(counts["v4l2", default: 0] >= 80)
        #expect(counts["alsa", default: 0] >= 60)
        #expect(counts["evdev", default: 0] >= 25)
        #expect(counts["netmap", default: 0] >= 5)
        for name in ["tty", "tun", "kvm", "loop"] { #expect(counts[name, default: 0] > 0, "class \(name)") }
    }

    @Test func everyEvdevCommandOfTheHeaderIsDeclared() throws {
        let names = Set(repositorySpecs.specClass(named: "evdev")!.ioctls.map(\.name))
        for n in ["EVIOCGVERSION", "EVIOCGID", "EVIOCGREP", "EVIOCSREP", "EVIOCGKEYCODE", "EVIOCGKEYCODE_V2", "EVIOCSKEYCODE",
                  "EVIOCSKEYCODE_V2", "EVIOCGNAME", "EVIOCGPHYS", "EVIOCGUNIQ", "EVIOCGPROP", "EVIOCGMTSLOTS", "EVIOCGKEY",
                  "EVIOCGLED", "EVIOCGSND", "EVIOCGSW", "EVIOCGBIT", "EVIOCGABS", "EVIOCSABS", "EVIOCSFF", "EVIOCRMFF",
                  "EVIOCGEFFECTS", "EVIOCGRAB", "EVIOCREVOKE", "EVIOCGMASK", "EVIOCSMASK", "EVIOCSCLOCKID"] {
            #expect(names.contains(n), "\(n)")
        }
    }
}

@Suite("Header verification")
struct VerifyTests {
    @Test func allRepositorySpecsMatchTheHeaders() throws {
        let reports = Verifier().verify(repositorySpecs)
        for report in reports {
            #expect(report.mismatches.isEmpty, "\(report.file): \(report.mismatches.map(\.description).joined(separator: "\n"))")
        }
        let checked = reports.reduce(0) { $0 + $1.structs + $1.fields + $1.ioctls }
        #expect(checked > 2000)
    }

    @Test func aDeliberatelyWrongSpecFails() throws {
        let specs = try SpecSet.compile(sources: [("wrong.spec", """
            headers "linux/if_tun.h" "linux/filter.h"
            class wrong { devices "/dev/net/tun" }
            struct sock_filter {
              code u16
              jt   u8
              jf   u16        # really a u8: shifts k and grows the struct
              k    u32
            }
            const TUN_F_CSUM = 0x02
            ioctl TUNGETFEATURES = _IOR('T', 207, u64)
            ioctl TUNNOSUCH = _IO('T', 250)
            """)])
        let report = Verifier().verify(specs.files[0], in: specs)
        let messages = report.mismatches.map(\.description)
        #expect(messages.contains("wrong.spec:3:8: struct sock_filter: size, alignment: spec says 12, 4, C says 8, 4"))
        #expect(messages.contains("wrong.spec:6:3: struct sock_filter.jf: offset, size: spec says 4, 2, C says 3, 1"))
        #expect(messages.contains("wrong.spec:7:3: struct sock_filter.k: offset, size: spec says 8, 4, C says 4, 4"))
        #expect(messages.contains("wrong.spec:9:7: constant TUN_F_CSUM: spec says 2, C says 1"))
        #expect(messages.contains("wrong.spec:10:7: ioctl TUNGETFEATURES: spec says 0x800854cf, C says 0x800454cf"))
        #expect(messages.contains { $0.hasPrefix("wrong.spec:11:7: ioctl TUNNOSUCH: the C compiler rejects it") })
    }
}
