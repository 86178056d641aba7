#if canImport(Glibc)
import Glibc
#endif
import ParadicePlan
@testable import ParadiceEngine
import ParadiceSpec
import ParadiceSystem
import Testing

/// An open file's spec states as the session keeps them: what ALSA's HW_PARAMS remembers sizes the file's
/// later transfers; before it and after HW_FREE a transfer is refused with the driver's EBADFD.
@Suite("Session file states")
struct SessionFileStateTests {
    let specs: SpecSet
    let alsa: SpecClass

    init() throws {
        specs = try SpecSet.load(directory: repositorySpecFolder)
        alsa = try #require(specs.specClass(named: "alsa"))
    }

    /// Guest memory at this process's own addresses.
    struct OwnMemory: GuestMemory {
        func read(address: UInt64, count: Int) throws -> [UInt8] {
            Array(UnsafeRawBufferPointer(start: UnsafeRawPointer(bitPattern: UInt(address)), count: count))
        }
    }

    func plan(_ name: String, _ argument: UnsafeMutableRawPointer?, on file: OpenFile) throws -> PlannedCall {
        let ioctl = try #require(specs.ioctl(named: name))
        return try Planner(specs: specs).plan(command: try ioctl.command(in: specs, parameters: [:]),
                                              argument: UInt64(UInt(bitPattern: argument)), specClass: alsa,
                                              memory: OwnMemory(), variables: file.variables)
    }

    /// The errno a plan fails with, or nil when it plans.
    func refusal(_ name: String, _ argument: UnsafeMutableRawPointer?, on file: OpenFile) -> Errno? {
        do { _ = try plan(name, argument, on: file); return nil } catch let error as PlanError { return error.errno } catch { return .ioError }
    }

    /// The driver's side of a call, done by the test: the answer `bytes` and the result, as the session
    /// hands them to the file after the call.
    func complete(_ call: PlannedCall, answer: [[UInt8]], result: Int64, on file: OpenFile) {
        file.states.apply(call.stateChanges(answer: answer, result: result))
    }

    func hwParamsAnswer(_ call: PlannedCall, frameBits: UInt32, sampleBits: UInt32, channels: UInt32) throws -> [[UInt8]] {
        var bytes = [UInt8](repeating: 0, count: call.plan.regions[0].length)
        let intervals = try #require(specs.offset(of: "intervals", in: "snd_pcm_hw_params"))
        let size = try #require(specs.record(named: "snd_interval")).size
        let first = try #require(try specs.constantValue("SNDRV_PCM_HW_PARAM_FIRST_INTERVAL"))
        for (name, value) in [("FRAME_BITS", frameBits), ("SAMPLE_BITS", sampleBits), ("CHANNELS", channels)] {
            let at = intervals + Int(try #require(try specs.constantValue("SNDRV_PCM_HW_PARAM_" + name)) - first) * size
            withUnsafeBytes(of: value.littleEndian) { bytes.replaceSubrange(at..<at + 4, with: $0) }
        }
        return [bytes]
    }

    @Test func hwParamsSizesTransfersUntilHwFree() throws {
        let file = OpenFile(fd: try Syscall.open("/dev/null", O_RDWR), path: "/dev/snd/pcmC0D0p", specClass: alsa, state: nil, nonBlocking: false)
        let xferSize = try #require(specs.record(named: "snd_xferi")).size
        let xfer = UnsafeMutableRawPointer.allocate(byteCount: xferSize, alignment: 16)
        defer { xfer.deallocate() }
        xfer.initializeMemory(as: UInt8.self, repeating: 0, count: xferSize)
        let audio = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 16)
        defer { audio.deallocate() }
        xfer.storeBytes(of: UInt64(UInt(bitPattern: audio)), toByteOffset: try #require(specs.offset(of: "buf", in: "snd_xferi")), as: UInt64.self)
        xfer.storeBytes(of: UInt64(100), toByteOffset: try #require(specs.offset(of: "frames", in: "snd_xferi")), as: UInt64.self)
        func writeLength() throws -> Int? {
            try plan("SNDRV_PCM_IOCTL_WRITEI_FRAMES", xfer, on: file).plan.regions.first { $0.address == UInt64(UInt(bitPattern: audio)) }?.length
        }

        // Before HW_PARAMS: the driver's EBADFD, for playback and capture alike.
        #expect(refusal("SNDRV_PCM_IOCTL_WRITEI_FRAMES", xfer, on: file) == .fileDescriptorInBadState)
        #expect(refusal("SNDRV_PCM_IOCTL_READI_FRAMES", xfer, on: file) == .fileDescriptorInBadState)

        let params = UnsafeMutableRawPointer.allocate(byteCount: 1024, alignment: 16)
        defer { params.deallocate() }
        params.initializeMemory(as: UInt8.self, repeating: 0, count: 1024)
        let hwParams = try plan("SNDRV_PCM_IOCTL_HW_PARAMS", params, on: file)
        // S16_LE stereo: 4-byte frames.
        complete(hwParams, answer: try hwParamsAnswer(hwParams, frameBits: 32, sampleBits: 16, channels: 2), result: 0, on: file)
        #expect(try writeLength() == 400)
        let read = try plan("SNDRV_PCM_IOCTL_READI_FRAMES", xfer, on: file)
        let buffer = try #require(read.plan.regions.firstIndex { $0.address == UInt64(UInt(bitPattern: audio)) })
        #expect(read.plan.regions[buffer].length == 400)
        // The driver read 25 frames (snd_xferi.result, which the spec's copy-back reads): 100 bytes go back.
        var answer = read.plan.regions.map { [UInt8](repeating: 0, count: $0.length) }
        let result = try #require(specs.offset(of: "result", in: "snd_xferi"))
        withUnsafeBytes(of: Int64(25).littleEndian) { answer[0].replaceSubrange(result..<result + 8, with: $0) }
        #expect(read.copyOutLengths(answer: answer, result: 0, variables: file.variables)[buffer] == 100)

        // A new HW_PARAMS replaces the sizes; a failed one leaves the stream without any.
        complete(hwParams, answer: try hwParamsAnswer(hwParams, frameBits: 48, sampleBits: 24, channels: 2), result: 0, on: file)
        #expect(try writeLength() == 600)
        complete(hwParams, answer: try hwParamsAnswer(hwParams, frameBits: 48, sampleBits: 24, channels: 2), result: -1, on: file)
        #expect(refusal("SNDRV_PCM_IOCTL_WRITEI_FRAMES", xfer, on: file) == .fileDescriptorInBadState)

        // HW_FREE forgets; a failed HW_FREE does not.
        complete(hwParams, answer: try hwParamsAnswer(hwParams, frameBits: 32, sampleBits: 16, channels: 2), result: 0, on: file)
        let hwFree = try plan("SNDRV_PCM_IOCTL_HW_FREE", nil, on: file)
        complete(hwFree, answer: [], result: -1, on: file)
        #expect(try writeLength() == 400)
        complete(hwFree, answer: [], result: 0, on: file)
        #expect(refusal("SNDRV_PCM_IOCTL_WRITEI_FRAMES", xfer, on: file) == .fileDescriptorInBadState)
    }

    /// SYNC_PTR's `sync` conditions read `$capture`, which alsa.spec's `path capture` fixes from the PCM's
    /// name at open: a playback buffer goes to the device before the call, a capture buffer comes back after it.
    @Test func syncPtrFollowsTheStreamDirectionOfThePath() throws {
        let data: Range<UInt64> = 0..<UInt64(try #require(try specs.constantValue("SNDRV_PCM_MMAP_OFFSET_STATUS_OLD")))
        let size = try #require(specs.record(named: "snd_pcm_sync_ptr")).size
        let argument = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 16)
        defer { argument.deallocate() }
        argument.initializeMemory(as: UInt8.self, repeating: 0, count: size)
        func open(_ path: String) throws -> OpenFile {
            OpenFile(fd: try Syscall.open("/dev/null", O_RDWR), path: path, specClass: alsa, state: nil, nonBlocking: false)
        }
        let player = try open("/dev/snd/pcmC0D0p"), recorder = try open("/dev/snd/pcmC1D3c")
        #expect(try player.states.value(of: "capture") == 0 && recorder.states.value(of: "capture") == 1)
        let playback = try plan("SNDRV_PCM_IOCTL_SYNC_PTR", argument, on: player)
        #expect(playback.syncToDevice == [data] && playback.syncToGuest(result: 0, variables: player.variables).isEmpty)
        let capture = try plan("SNDRV_PCM_IOCTL_SYNC_PTR", argument, on: recorder)
        #expect(capture.syncToDevice.isEmpty && capture.syncToGuest(result: 0, variables: recorder.variables) == [data])
        #expect(capture.syncToGuest(result: -1, variables: recorder.variables).isEmpty)
        // The path is matched whole: a control node, or a name that only ends in c, is no capture PCM.
        #expect(try open("/dev/snd/controlC0").states.value(of: "capture") == 0)
        #expect(try open("/tmp/pcmC0D0c").states.value(of: "capture") == 0)
    }

    @Test func statesArePerFileAndOnlyTheDeclaredOnes() throws {
        let a = OpenFile(fd: try Syscall.open("/dev/null", O_RDWR), path: "/dev/snd/pcmC0D0p", specClass: alsa, state: nil, nonBlocking: false)
        let b = OpenFile(fd: try Syscall.open("/dev/null", O_RDWR), path: "/dev/snd/pcmC0D0p", specClass: alsa, state: nil, nonBlocking: false)
        a.states.apply([(index: 0, value: 4)])
        #expect(try a.states.value(of: "frame_bytes") == 4)
        #expect(throws: PlanError.self) { try b.states.value(of: "frame_bytes") }
        #expect(try a.states.value(of: "no_such_state") == nil)   // not the spec's: a plug-in's to answer
        a.states.apply([(index: 99, value: 1)])                  // out of range: ignored
        // A class without states keeps none, and its plans read no variables.
        let tty = OpenFile(fd: try Syscall.open("/dev/null", O_RDWR), path: "/dev/null", specClass: specs.specClass(named: "tty"), state: nil, nonBlocking: false)
        #expect(tty.states.isEmpty && tty.variables == nil)
    }
}
