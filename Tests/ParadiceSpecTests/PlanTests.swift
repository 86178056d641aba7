import ParadicePlan
import ParadiceSpec
import ParadiceSystem
import Testing

@Suite("Memory plans from real argument bytes")
struct PlanTests {
    @Test func drmGetResourcesGivesFourCapacityRegions() throws {
        let res = Arg("drm_mode_card_res")
        let fbs = Arg(bytes: 4 * 2), crtcs = Arg(bytes: 4 * 3), connectors = Arg(bytes: 4 * 4), encoders = Arg(bytes: 4 * 5)
        res.set("fb_id_ptr", fbs); res.set("count_fbs", 2)
        res.set("crtc_id_ptr", crtcs); res.set("count_crtcs", 3)
        res.set("connector_id_ptr", connectors); res.set("count_connectors", 4)
        res.set("encoder_id_ptr", encoders); res.set("count_encoders", 5)
        let call = try plan("drm", "DRM_IOCTL_MODE_GETRESOURCES", res.address)
        #expect(call.plan.regions.count == 5)
        #expect(region(call, at: res.address) == .init(address: res.address, length: 64, direction: .both))
        for (arg, n) in [(fbs, 2), (crtcs, 3), (connectors, 4), (encoders, 5)] {
            #expect(region(call, at: arg.address) == .init(address: arg.address, length: 4 * n, direction: .output, preserve: true))
        }
        #expect(call.plan.pointers.count == 4)

        // The driver reports more connectors than the capacity and fewer encoders: copy back min(capacity, real).
        var after = call.gathered
        func setCount(_ field: String, _ v: UInt32) {
            let (o, _) = res.offset(field)
            withUnsafeBytes(of: v.littleEndian) { after[0].replaceSubrange(o..<(o + 4), with: $0) }
        }
        setCount("count_connectors", 9)
        setCount("count_encoders", 1)
        let lengths = call.copyOutLengths(answer: after, result: nil)
        let index = { (a: Arg) in call.plan.regions.firstIndex { $0.address == a.address }! }
        #expect(lengths[index(connectors)] == 16)
        #expect(lengths[index(encoders)] == 4)
        #expect(lengths[index(fbs)] == 8)
        #expect(lengths[0] == 64)
    }

    @Test func drmGetResourcesWithZeroCountsTouchesOnlyTheStruct() throws {
        let res = Arg("drm_mode_card_res")
        let call = try plan("drm", "DRM_IOCTL_MODE_GETRESOURCES", res.address)
        #expect(call.plan.regions.count == 1)
        #expect(call.plan.pointers.isEmpty)
    }

    @Test func drmAtomicSumsTheCountArray() throws {
        let atomic = Arg("drm_mode_atomic")
        let objs = Arg(bytes: 8), counts = Arg(bytes: 8), props = Arg(bytes: 4 * 5), values = Arg(bytes: 8 * 5)
        counts.set(at: 0, size: 4, 2); counts.set(at: 4, size: 4, 3)
        atomic.set("count_objs", 2)
        atomic.set("objs_ptr", objs); atomic.set("count_props_ptr", counts)
        atomic.set("props_ptr", props); atomic.set("prop_values_ptr", values)
        let call = try plan("drm", "DRM_IOCTL_MODE_ATOMIC", atomic.address)
        #expect(region(call, at: props.address)?.length == 20)
        #expect(region(call, at: values.address)?.length == 40)
        #expect(region(call, at: objs.address)?.length == 8)
        #expect(region(call, at: props.address)?.direction == .input)
    }

    @Test func drmPrimeHandleToFdReturnsAnFdInAField() throws {
        let prime = Arg("drm_prime_handle")
        let call = try plan("drm", "DRM_IOCTL_PRIME_HANDLE_TO_FD", prime.address)
        let (fdOffset, _) = prime.offset("fd")
        #expect(call.plan.descriptors.contains { $0.offset == fdOffset && $0.direction == .output })
    }

    @Test func drmPrimeFdToHandleTakesAnFdInAField() throws {
        let prime = Arg("drm_prime_handle")
        let call = try plan("drm", "DRM_IOCTL_PRIME_FD_TO_HANDLE", prime.address)
        let (fdOffset, _) = prime.offset("fd")
        #expect(call.plan.descriptors == [.init(region: 0, offset: fdOffset, width: 4, direction: .input)])
    }

    @Test func v4l2ExtControlsCarryTheirMediaRequestFd() throws {
        let controls = Arg("v4l2_ext_controls"), control = Arg("v4l2_ext_control")
        controls.set("which", try #require(try repositorySpecs.constantValue("V4L2_CTRL_WHICH_REQUEST_VAL")))
        controls.set("count", 1)
        controls.set("request_fd", 6)
        controls.set("controls", control)
        let call = try plan("v4l2", "VIDIOC_S_EXT_CTRLS", controls.address, variables: FixedVariables(values: [:], functions: ["ctrl_is_ptr": { _ in 0 }]))
        let (fdOffset, _) = controls.offset("request_fd")
        #expect(call.plan.descriptors == [.init(region: 0, offset: fdOffset, width: 4, direction: .input)])
        // With the current value, the field is a plain number the kernel ignores.
        controls.set("which", 0)
        let current = try plan("v4l2", "VIDIOC_S_EXT_CTRLS", controls.address, variables: FixedVariables(values: [:], functions: ["ctrl_is_ptr": { _ in 0 }]))
        #expect(current.plan.descriptors.isEmpty)
    }

    @Test func flagSetsRejectUnknownBits() throws {
        let atomic = Arg("drm_mode_atomic")
        atomic.set("flags", 0x8000_0000)
        do {
            _ = try plan("drm", "DRM_IOCTL_MODE_ATOMIC", atomic.address)
            Issue.record("unknown flag bits were accepted")
        } catch let e as PlanError {
            #expect(e.errno == .invalidArgument)
            #expect(e.description.contains("flags"))
        }
        atomic.set("flags", 0x100)   // DRM_MODE_ATOMIC_TEST_ONLY
        _ = try plan("drm", "DRM_IOCTL_MODE_ATOMIC", atomic.address)
    }

    @Test func v4l2UserptrBufferGivesTheUserBuffer() throws {
        let buf = Arg("v4l2_buffer")
        let data = Arg(bytes: 4096)
        buf.set("type", 1)        // V4L2_BUF_TYPE_VIDEO_CAPTURE
        buf.set("memory", 2)      // V4L2_MEMORY_USERPTR
        buf.set("m.userptr", data)
        buf.set("length", 4096)
        let call = try plan("v4l2", "VIDIOC_QBUF", buf.address)
        #expect(call.plan.regions.count == 2)
        #expect(region(call, at: buf.address)?.length == 88)
        #expect(region(call, at: data.address)?.length == 4096)
        // The driver keeps the buffer after the call: the plan says so, and the engine runs the call only
        // with memory a plug-in lends for it.
        #expect(call.plan.pointers == [.init(region: 0, offset: buf.offset("m").0, target: 1, kept: true)])
        #expect(call.keptReasons[0]?.contains("after QBUF returns") == true)
        #expect(call.refusals.isEmpty)
        buf.set("memory", 1)
        #expect(try plan("v4l2", "VIDIOC_QBUF", buf.address).plan.pointers.isEmpty)
    }

    @Test func netmapOptionsThatNameKernelMappedMemoryAreRefused() throws {
        let header = Arg("nmreq_header")
        let option = Arg("nmreq_option", extra: 128)
        option.set("nro_reqtype", 1)      // NETMAP_REQ_OPT_EXTMEM
        header.set("nr_reqtype", 1)
        header.set("nr_options", option)
        let call = try plan("netmap", "NIOCCTRL", header.address)
        #expect(call.refusals.first?.contains("cannot travel as bytes") == true)
    }

    @Test func v4l2MmapBufferHasNoPointer() throws {
        let buf = Arg("v4l2_buffer")
        buf.set("type", 1); buf.set("memory", 1); buf.set("m.offset", 0x1234); buf.set("length", 4096)
        let call = try plan("v4l2", "VIDIOC_QBUF", buf.address)
        #expect(call.plan.regions.count == 1)
        #expect(call.plan.pointers.isEmpty)
    }

    @Test func v4l2MultiplanarBufferFollowsPlanesAndTheirUnions() throws {
        let buf = Arg("v4l2_buffer")
        let plane = repositorySpecs.record(named: "v4l2_plane")!
        let planes = Arg(bytes: plane.size * 2)
        let data = Arg(bytes: 1000)
        buf.set("type", 9)        // VIDEO_CAPTURE_MPLANE
        buf.set("memory", 2)      // USERPTR
        buf.set("m.planes", planes)
        buf.set("length", 2)
        let (userptr, _) = { () -> (Int, Int) in
            let (m, _) = plane.field(named: "m").map { ($0.offset, 0) }!
            return (m, 8)
        }()
        let (lengthOffset, _) = plane.field(named: "length").map { ($0.offset, 0) }!
        planes.set(at: userptr, size: 8, Int64(bitPattern: data.address))
        planes.set(at: lengthOffset, size: 4, 1000)
        let call = try plan("v4l2", "VIDIOC_QBUF", buf.address)
        #expect(region(call, at: planes.address)?.length == plane.size * 2)
        #expect(region(call, at: data.address)?.length == 1000)
        // The second plane's userptr is NULL: no region for it.
        #expect(call.plan.regions.count == 3)
    }

    @Test func enumChecksRefuseValuesOutsideTheEnum() throws {
        let specs = try SpecSet.compile(sources: [("e.spec", """
            class e { devices "/dev/e" }
            enum colour { RED = 1; GREEN; BLUE }
            struct paint { c u32 enum(colour); amount u32 }
            ioctl PAINT = _IOW('e', 1, paint)
            """)])
        let arg = Arg("paint", specs: specs)
        arg.set("c", 2)
        let planner = Planner(specs: specs)
        let command = try specs.ioctl(named: "PAINT")!.command(in: specs, parameters: [:])
        _ = try planner.plan(command: command, argument: arg.address, className: "e", memory: LocalMemory())
        arg.set("c", 7)
        do {
            _ = try planner.plan(command: command, argument: arg.address, className: "e", memory: LocalMemory())
            Issue.record("a value outside the enum was accepted")
        } catch let e as PlanError {
            #expect(e.errno == .invalidArgument && e.description.contains("= 7 is not a member of colour"))
        }
    }

    @Test func evdevNameFamilyGivesALenBytesOutRegion() throws {
        let name = Arg(bytes: 64)
        let number = command("EVIOCGNAME", ["len": 64])
        #expect(number == 0x8040_4506)
        let match = try #require(repositorySpecs.match(command: number, inClass: "evdev"))
        #expect(match.ioctl.name == "EVIOCGNAME")
        #expect(match.parameters["len"] == 64)
        let call = try Planner(specs: repositorySpecs).plan(command: number, argument: name.address, className: "evdev", memory: LocalMemory())
        // Gathered as well, so that the bytes past what the driver reports written go back unchanged.
        #expect(call.plan.regions == [.init(address: name.address, length: 64, direction: .output, preserve: true)])
        #expect(call.copyOutLengths(answer: call.gathered, result: 9) == [9])
    }

    @Test func refusedIoctlsAreEpermWithTheReason() throws {
        let region = Arg("kvm_userspace_memory_region")
        do {
            _ = try plan("kvm", "KVM_SET_USER_MEMORY_REGION", region.address)
            Issue.record("a refused ioctl was planned")
        } catch let e as PlanError {
            #expect(e.errno == .notPermitted)
            #expect(e.description.contains("cannot travel as bytes"))
        }
    }

    @Test func evdevBitAndAbsFamiliesSolveTheirParameters() throws {
        // EVIOCGBIT(EV_KEY, 96) and EVIOCSABS(ABS_MT_SLOT)
        let bit = try #require(repositorySpecs.match(command: 0x8060_4521, inClass: "evdev"))
        #expect(bit.ioctl.name == "EVIOCGBIT" && bit.parameters == ["ev": 1, "len": 96])
        let sabs = try #require(repositorySpecs.match(command: 0x4018_45ef, inClass: "evdev"))
        #expect(sabs.ioctl.name == "EVIOCSABS" && sabs.parameters == ["abs": 0x2f])
        #expect(repositorySpecs.match(command: 0x4018_46ef, inClass: "evdev") == nil)
    }

    @Test func uinputSetupAndCapabilityBits() throws {
        #expect(command("UI_DEV_SETUP") == 0x405c_5503 && command("UI_ABS_SETUP") == 0x401c_5504)
        let setup = Arg("uinput_setup")
        let call = try plan("uinput", "UI_DEV_SETUP", setup.address)
        #expect(call.plan.regions == [.init(address: setup.address, length: 92, direction: .input)])
        // The bit number travels in the argument itself; no guest memory is read.
        let bit = try plan("uinput", "UI_SET_KEYBIT", 0x14a)
        #expect(bit.plan.argument == .value(0x14a) && bit.plan.regions.isEmpty)
        // UI_SET_PHYS reads the string the argument points to: the 1024 bytes the driver may copy.
        let phys = Arg(bytes: 1024)
        let physCall = try plan("uinput", "UI_SET_PHYS", phys.address)
        #expect(physCall.plan.regions == [.init(address: phys.address, length: 1024, direction: .input)])
    }

    @Test func uinputSysnameFamilyCopiesBackWhatTheDriverWrote() throws {
        let number = command("UI_GET_SYSNAME", ["len": 37])
        #expect(number == 0x8025_552c)
        let match = try #require(repositorySpecs.match(command: number, inClass: "uinput"))
        #expect(match.ioctl.name == "UI_GET_SYSNAME" && match.parameters["len"] == 37)
        let name = Arg(bytes: 37)
        let call = try plan("uinput", "UI_GET_SYSNAME", name.address, parameters: ["len": 37])
        #expect(call.plan.regions == [.init(address: name.address, length: 37, direction: .output, preserve: true)])
        #expect(call.copyOutLengths(answer: call.gathered, result: 8) == [8])   // "input12" and its NUL
    }

    /// A periodic effect's custom_data in a force-feedback request is the uploader's address: never followed,
    /// whatever the effect's type and waveform say.
    @Test func uinputForceFeedbackRequestsAreWholeStructsWithoutPointers() throws {
        let upload = Arg("uinput_ff_upload")
        #expect(upload.size == 104)
        upload.set("effect.type", 0x51)              // FF_PERIODIC
        upload.set("effect.u.periodic.waveform", 0x5d)   // FF_CUSTOM
        upload.set("effect.u.periodic.custom_len", 16)
        upload.set("effect.u.periodic.custom_data", 0x7fff_0000_1000)
        let begin = try plan("uinput", "UI_BEGIN_FF_UPLOAD", upload.address)
        #expect(begin.plan.regions == [.init(address: upload.address, length: 104, direction: .both)])
        #expect(begin.plan.pointers.isEmpty)
        let end = try plan("uinput", "UI_END_FF_UPLOAD", upload.address)
        #expect(end.plan.regions == [.init(address: upload.address, length: 104, direction: .input)] && end.plan.pointers.isEmpty)
        let erase = Arg("uinput_ff_erase")
        let eraseCall = try plan("uinput", "UI_BEGIN_FF_ERASE", erase.address)
        #expect(eraseCall.plan.regions == [.init(address: erase.address, length: 12, direction: .both)])
    }

    @Test func evdevMtSlotsReadsTheCodeAndWritesValues() throws {
        let slots = Arg(bytes: 4 + 4 * 10)
        slots.set(at: 0, size: 4, 0x35)
        let call = try plan("evdev", "EVIOCGMTSLOTS", slots.address, parameters: ["len": 44])
        #expect(call.plan.regions == [.init(address: slots.address, length: 44, direction: .both)])
    }

    @Test func kvmCpuidFlexibleArrayOfThree() throws {
        let entry = repositorySpecs.record(named: "kvm_cpuid_entry2")!
        let cpuid = Arg("kvm_cpuid2", extra: entry.size * 3)
        cpuid.set("nent", 3)
        let call = try plan("kvm", "KVM_GET_SUPPORTED_CPUID", cpuid.address)
        let header = repositorySpecs.record(named: "kvm_cpuid2")!.size
        #expect(call.plan.regions == [.init(address: cpuid.address, length: header + 3 * entry.size, direction: .both)])
    }

    @Test func kvmCreateVmReturnsAnFd() throws {
        let call = try plan("kvm", "KVM_CREATE_VM", 0)
        #expect(call.plan.returnsDescriptor)
        #expect(call.plan.argument == .value(0))
        #expect(call.plan.regions.isEmpty)
    }

    @Test func alsaWriteiUsesThePluginFrameSize() throws {
        let xfer = Arg("snd_xferi")
        let audio = Arg(bytes: 256 * 4)
        xfer.set("buf", audio)
        xfer.set("frames", 256)
        let call = try plan("alsa", "SNDRV_PCM_IOCTL_WRITEI_FRAMES", xfer.address,
                            variables: FixedVariables(values: ["frame_bytes": 4]))
        #expect(region(call, at: audio.address) == .init(address: audio.address, length: 1024, direction: .input))
        #expect(call.plan.blocking)
        // With no plug-in state there is no frame size: refused, not guessed.
        #expect(throws: PlanError.self) { try plan("alsa", "SNDRV_PCM_IOCTL_WRITEI_FRAMES", xfer.address) }
    }

    /// HW_PARAMS' `remember`s read the intervals the driver left; a failed call unsets them, HW_FREE forgets.
    @Test func alsaHwParamsRemembersTheNegotiatedSizesAndHwFreeForgetsThem() throws {
        let alsa = try #require(repositorySpecs.specClass(named: "alsa"))
        #expect(alsa.states.map(\.name) == ["frame_bytes", "sample_bytes", "channels"])
        #expect(alsa.states.allSatisfy { $0.unsetErrno == 77 })   // EBADFD
        let params = Arg("snd_pcm_hw_params")
        let call = try plan("alsa", "SNDRV_PCM_IOCTL_HW_PARAMS", params.address)
        let intervals = try #require(repositorySpecs.offset(of: "intervals", in: "snd_pcm_hw_params"))
        let intervalSize = try #require(repositorySpecs.record(named: "snd_interval")).size
        let first = try #require(try repositorySpecs.constantValue("SNDRV_PCM_HW_PARAM_FIRST_INTERVAL"))
        func answer(frameBits: UInt32, sampleBits: UInt32, channels: UInt32) throws -> [[UInt8]] {
            var bytes = [UInt8](repeating: 0xEE, count: call.plan.regions[0].length)
            for (name, value) in [("FRAME_BITS", frameBits), ("SAMPLE_BITS", sampleBits), ("CHANNELS", channels)] {
                let index = Int(try #require(try repositorySpecs.constantValue("SNDRV_PCM_HW_PARAM_" + name)) - first)
                withUnsafeBytes(of: value.littleEndian) { bytes.replaceSubrange(intervals + index * intervalSize ..< intervals + index * intervalSize + 4, with: $0) }
            }
            return [bytes]
        }
        func states(_ changes: [(index: Int, value: Int64?)]) -> [String: Int64?] {
            Dictionary(changes.map { (alsa.states[$0.index].name, $0.value) }, uniquingKeysWith: { $1 })
        }
        // S24_3LE stereo: 24-bit samples, 48-bit frames.
        #expect(states(call.stateChanges(answer: try answer(frameBits: 48, sampleBits: 24, channels: 2), result: 0))
                == ["frame_bytes": 6, "sample_bytes": 3, "channels": 2])
        // 20-bit samples round up to whole bytes, never fewer than the driver reads.
        #expect(states(call.stateChanges(answer: try answer(frameBits: 20, sampleBits: 20, channels: 1), result: 0))
                == ["frame_bytes": 3, "sample_bytes": 3, "channels": 1])
        // An interval the driver left at 0 leaves its state unset; a failed call unsets all three.
        #expect(states(call.stateChanges(answer: try answer(frameBits: 32, sampleBits: 16, channels: 0), result: 0))
                == ["frame_bytes": 4, "sample_bytes": 2, "channels": nil])
        #expect(states(call.stateChanges(answer: try answer(frameBits: 32, sampleBits: 16, channels: 2), result: -1))
                == ["frame_bytes": nil, "sample_bytes": nil, "channels": nil])
        let free = try plan("alsa", "SNDRV_PCM_IOCTL_HW_FREE", 0)
        #expect(states(free.stateChanges(answer: [], result: 0)) == ["frame_bytes": nil, "sample_bytes": nil, "channels": nil])
        #expect(free.stateChanges(answer: [], result: -1).isEmpty)
        // Other calls change nothing.
        #expect(try plan("alsa", "SNDRV_PCM_IOCTL_PREPARE", 0).stateChanges(answer: [], result: 0).isEmpty)
    }

    @Test func syncPointsComeFromTheSpec() throws {
        // KVM_RUN: the whole mapping (kvm_run and the pages after it) to the device and back, whatever the result.
        let run = try plan("kvm", "KVM_RUN", 0)
        #expect(run.syncToDevice == [0..<(16 << 20)])
        #expect(run.syncToGuest(result: -1, variables: nil) == [0..<(16 << 20)])
        // SYNC_PTR: the data buffer, below the status pages, one way per stream direction.
        let sync = Arg("snd_pcm_sync_ptr")
        let data: Range<UInt64> = 0..<0x8000_0000
        let playback = FixedVariables(values: ["capture": 0]), capture = FixedVariables(values: ["capture": 1])
        let played = try plan("alsa", "SNDRV_PCM_IOCTL_SYNC_PTR", sync.address, variables: playback)
        #expect(played.syncToDevice == [data] && played.syncToGuest(result: 0, variables: playback).isEmpty)
        let captured = try plan("alsa", "SNDRV_PCM_IOCTL_SYNC_PTR", sync.address, variables: capture)
        #expect(captured.syncToDevice.isEmpty && captured.syncToGuest(result: 0, variables: capture) == [data])
        #expect(captured.syncToGuest(result: -1, variables: capture).isEmpty)
        // Without the plug-in that says which way a PCM goes, nothing is synced.
        let bare = try plan("alsa", "SNDRV_PCM_IOCTL_SYNC_PTR", sync.address)
        #expect(bare.syncToDevice.isEmpty && bare.syncToGuest(result: 0, variables: nil).isEmpty)
        #expect(try plan("kvm", "KVM_GET_API_VERSION", 0).syncToDevice.isEmpty)
    }

    @Test func alsaWritenFollowsOnePointerPerChannel() throws {
        let xfer = Arg("snd_xfern")
        let left = Arg(bytes: 200), right = Arg(bytes: 200)
        let bufs = Arg(bytes: 16)
        bufs.set(at: 0, size: 8, Int64(bitPattern: left.address))
        bufs.set(at: 8, size: 8, Int64(bitPattern: right.address))
        xfer.set("bufs", bufs)
        xfer.set("frames", 100)
        let call = try plan("alsa", "SNDRV_PCM_IOCTL_WRITEN_FRAMES", xfer.address,
                            variables: FixedVariables(values: ["channels": 2, "sample_bytes": 2]))
        #expect(region(call, at: bufs.address)?.length == 16)
        #expect(region(call, at: left.address)?.length == 200)
        #expect(region(call, at: right.address)?.length == 200)
        #expect(call.plan.pointers.count == 3)
    }

    @Test func alsaElemListCopiesBackOnlyUsed() throws {
        let list = Arg("snd_ctl_elem_list")
        let id = repositorySpecs.record(named: "snd_ctl_elem_id")!
        let pids = Arg(bytes: id.size * 8)
        list.set("space", 8); list.set("pids", pids)
        let call = try plan("alsa", "SNDRV_CTL_IOCTL_ELEM_LIST", list.address)
        let index = call.plan.regions.firstIndex { $0.address == pids.address }!
        #expect(call.plan.regions[index].length == id.size * 8)
        let (usedOffset, _) = list.offset("used")
        var answer = call.gathered
        answer[0][usedOffset] = 3
        #expect(call.copyOutLengths(answer: answer, result: nil)[index] == id.size * 3)
    }

    @Test func netmapOptionChainOfTwo() throws {
        let header = Arg("nmreq_header")
        let body = Arg("nmreq_register")
        let optionSize = repositorySpecs.record(named: "nmreq_option")!.size
        let first = Arg("nmreq_option", extra: 16), second = Arg("nmreq_option")
        first.set("nro_next", second)
        first.set("nro_size", Int64(optionSize + 16))
        second.set("nro_size", Int64(optionSize))
        header.set("nr_reqtype", 1)      // NETMAP_REQ_REGISTER
        header.set("nr_body", body)
        header.set("nr_options", first)
        let call = try plan("netmap", "NIOCCTRL", header.address)
        #expect(region(call, at: body.address)?.length == repositorySpecs.record(named: "nmreq_register")!.size)
        #expect(region(call, at: first.address)?.length == optionSize + 16)
        #expect(region(call, at: second.address)?.length == optionSize)
        #expect(call.plan.regions.count == 4)
    }

    @Test func netmapCyclicOptionChainIsCut() throws {
        let header = Arg("nmreq_header")
        let option = Arg("nmreq_option")
        option.set("nro_next", option)
        option.set("nro_size", Int64(repositorySpecs.record(named: "nmreq_option")!.size))
        header.set("nr_reqtype", 1)
        header.set("nr_options", option)
        #expect(throws: PlanError.self) { try plan("netmap", "NIOCCTRL", header.address) }
    }

    @Test func tunSetIffTakesAnIfreqDespiteItsEncoding() throws {
        let number = command("TUNSETIFF")
        #expect(number == 0x4004_54ca)
        let ifr = Arg("ifreq")
        let call = try plan("tun", "TUNSETIFF", ifr.address)
        #expect(call.plan.regions == [.init(address: ifr.address, length: 40, direction: .both)])
        let persist = try plan("tun", "TUNSETPERSIST", 1)
        #expect(persist.plan.argument == .value(1) && persist.plan.regions.isEmpty)
    }

    @Test func tunFilterArrayFromALengthField() throws {
        let prog = Arg("sock_fprog")
        let insns = Arg(bytes: 8 * 4)
        prog.set("len", 4); prog.set("filter", insns)
        let call = try plan("tun", "TUNATTACHFILTER", prog.address)
        #expect(region(call, at: insns.address) == .init(address: insns.address, length: 32, direction: .input))
    }

    @Test func capsCutOversizedCounts() throws {
        let prog = Arg("sock_fprog")
        let insns = Arg(bytes: 8)
        prog.set("len", 5000); prog.set("filter", insns)
        do {
            _ = try plan("tun", "TUNATTACHFILTER", prog.address)
            Issue.record("an oversized count was accepted")
        } catch let e as PlanError {
            #expect(e.errno == .invalidArgument)
            #expect(e.description.contains("5000 elements, over the cap of 4096"))
        }
    }

    @Test func badGuestPointerIsEfaultNotACrash() throws {
        let prog = Arg("sock_fprog")
        prog.set("len", 4); prog.set("filter", 0x10)
        #expect(throws: PlanError.fault(address: 0x10, length: 32)) { try plan("tun", "TUNATTACHFILTER", prog.address) }
        #expect(throws: PlanError.self) { try plan("tun", "TUNSETIFF", 0x8) }
    }

    @Test func nullArgumentIsPassedThrough() throws {
        let call = try plan("tun", "TUNSETIFF", 0)
        #expect(call.plan.argument == .null)
    }

    @Test func snapshotMemoryAsksForWhatItLacks() throws {
        let prog = Arg("sock_fprog")
        let insns = Arg(bytes: 16)
        prog.set("len", 2); prog.set("filter", insns)
        let bytes = Array(UnsafeRawBufferPointer(start: prog.pointer, count: prog.size))
        let snapshot = SnapshotMemory([(prog.address, bytes)])
        #expect(throws: PlanError.missing(address: insns.address, length: 16)) {
            try plan("tun", "TUNATTACHFILTER", prog.address, memory: snapshot)
        }
    }

    @Test func unknownCommandIsEnotty() throws {
        #expect(throws: PlanError.unknownCommand(0xdead_beef)) {
            try Planner(specs: repositorySpecs).plan(command: 0xdead_beef, argument: 0, className: "tun", memory: LocalMemory())
        }
    }
}
