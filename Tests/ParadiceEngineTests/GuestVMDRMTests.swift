import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

extension DriverVMSuites.GuestVMSuites {
@Suite("DRM in the guest VM: virtio-gpu and vkms")
struct DRM {
    /// modetest's listing of connectors, encoders and planes with their properties: byte for byte the native
    /// one. Every id in it (objects, blobs, properties) is the driver VM kernel's, read through the node, so
    /// none may differ.
    @Test func modetestListingMatchesNative() throws {
        let guest = try GuestVM.require()
        let native = try guest.driver.native("modetest -M virtio_gpu -c -e -p")
        let inGuest = try guest.run("modetest -M virtio_gpu -c -e -p")
        #expect(native.status == 0 && inGuest.status == 0, "\(inGuest.output)")
        #expect(native.output.contains("Virtual-1") && native.output.contains("1024x768"))
        #expect(inGuest.output == native.output)
    }

    /// drm_info (libdrm's drmGetDevice, then every KMS object) on each card: in the guest VM the same driver,
    /// the same bus and device data (virtio-gpu's PCI ids, vkms's and vgem's platform "compatible", read by
    /// libdrm from the node's parent in sysfs: its subsystem, uevent and PCI attribute files) and the same
    /// objects as natively. Object states (which FB a plane shows) follow whoever used the card last, so only
    /// the objects themselves are compared.
    @Test func drmInfoFindsTheNativeDevices() throws {
        let guest = try GuestVM.require()
        func objects(_ json: String, _ card: Int) throws -> [String: String] {
            let root = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any], "\(json.prefix(300))")
            let info = try #require(root["/dev/dri/card\(card)"] as? [String: Any], "\(root.keys)")
            func text(_ value: Any?) -> String {
                guard let value, !(value is NSNull) else { return "null" }
                let data = try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys, .fragmentsAllowed])
                return data.map { String(decoding: $0, as: UTF8.self) } ?? "?"
            }
            func ids(_ key: String, _ fields: [String]) -> String {
                let list = info[key] as? [[String: Any]] ?? []
                return list.map { object in fields.map { text(object[$0]) }.joined(separator: "/") }.joined(separator: " ")
            }
            return ["driver": text(info["driver"]), "device": text(info["device"]), "fb_size": text(info["fb_size"]),
                    "connectors": ids("connectors", ["id", "type", "encoders", "modes"]), "encoders": ids("encoders", ["id", "type"]),
                    "crtcs": ids("crtcs", ["id"]), "planes": ids("planes", ["id", "possible_crtcs", "formats"])]
        }
        for card in 0...2 {
            let command = "drm_info -j /dev/dri/card\(card) 2>/dev/null"
            let native = try guest.driver.native(command)
            let inGuest = try guest.run(command)
            if card == 1 {
                // vgem has no KMS: drm_info gives up on it, natively as well
                #expect(inGuest.output == native.output && native.output.contains("{"), "\(inGuest.output) against \(native.output)")
                continue
            }
            #expect(native.status == 0 && inGuest.status == 0, "card\(card): \(inGuest.output.suffix(300))")
            let expected = try objects(native.output, card)
            let seen = try objects(inGuest.output, card)
            #expect(expected["device"] != "null", "card\(card): natively drmGetDevice found nothing")
            #expect(expected["connectors"]?.isEmpty == false, "card\(card): \(expected)")
            for key in expected.keys.sorted() {
                #expect(seen[key] == expected[key], "card\(card) \(key): guest \(seen[key] ?? "none"), native \(expected[key] ?? "none")")
            }
        }
        let sysfs = try guest.run("readlink -f /sys/dev/char/226:0/device/subsystem; ls /sys/dev/char/226:0/device/drm")
        #expect(sysfs.output.split(separator: "\n").map(String.init) == ["/sys/class/pci", "card0", "renderD128"], "\(sysfs.output)")
    }

    /// modetest -s in the guest VM sets the mode on the driver VM's display (the driver VM's own modetest sees
    /// it on the CRTC) and shows the same test pattern as modetest run natively.
    @Test func modetestSetsTheModeWithTheNativePattern() throws {
        let guest = try GuestVM.require()
        let vm = guest.driver
        let pipe = try #require(virtioGPUPipe(try vm.native("modetest -M virtio_gpu -c -p").output))
        let set = "\(pipe.connector)@\(pipe.crtc):1024x768"
        func screenAt1024x768(_ name: String) throws -> Data? { try driverVMScreenAt1024x768(vm, name) }
        let native = Background { try vm.native("sleep 12 | modetest -M virtio_gpu -s \(set)", timeout: 120) }
        let nativeScreen = try screenAt1024x768("gvm-native")
        let nativeRun = native.wait()
        #expect(nativeRun.output.contains("setting mode 1024x768"), "\(nativeRun.output)")

        let inGuest = Background { try guest.run("sleep 15 | modetest -M virtio_gpu -s \(set)", timeout: 120) }
        let guestScreen = try screenAt1024x768("gvm-guest")
        let crtc = try vm.native("modetest -M virtio_gpu -p").output
        let guestRun = inGuest.wait()
        #expect(guestRun.status == 0 && guestRun.output.contains("setting mode 1024x768"), "\(guestRun.output)")
        let crtcLine = crtc.split(separator: "\n").first { $0.hasPrefix(pipe.crtc + "\t") }.map(String.init) ?? ""
        #expect(crtcLine.contains("(1024x768)"), "\(crtc)")
        let expected = try #require(nativeScreen, "the native modetest never showed 1024x768")
        let shown = try #require(guestScreen, "modetest in the guest VM never showed 1024x768")
        #expect(expected.count == 1024 * 768 * 3 && Set(expected).count > 4)
        #expect(shown == expected)
    }

    /// vkms completes a flip at its 60 Hz vblank: modetest -v in the guest VM, each flip's event read from its
    /// node, keeps the pace native runs before and after it set (an attempt while the host was busy is taken
    /// again, as in the driver VM's own flip test), unless the forwarded chain itself cannot fit in a frame.
    ///
    /// Each frame in the guest waits on three round trips to the driver VM's backend: modetest reads the
    /// flip's event and queues the next flip (one each), and its poll's request arms the backend's watch
    /// whose PD_EVENT brings the next flip's event (half a round trip each way). When they take longer than
    /// a vblank period, the flip completes a vblank later, however well Paradice does. So the bound is 80 % of
    /// the lower of the native rate and what the chain allows: forwarded ioctls timed in the guest right
    /// before and after modetest, taken in threes as frames, each frame lasting as many vblank periods as its
    /// three round trips need. On an idle host they fit in a frame and the bound is 80 % of native; a lost
    /// wake-up, or a flip reported a frame late each time, still halves the rate below it. Only round trips
    /// measured slow lower the bound, and only by what they cost.
    @Test func vkmsPageFlipsKeepTheNativePace() throws {
        let guest = try GuestVM.require()
        let vm = guest.driver
        let listing = try vm.native("modetest -M vkms -c -p")
        let pipe = try #require(kmsPipe(listing.output), "\(listing.output)")
        let command = "sleep 12 | modetest -M vkms -s \(pipe.connector)@\(pipe.crtc):\(pipe.mode) -v 2>&1"
        let script = "forwarded-round-trips.py"
        try? FileManager.default.removeItem(atPath: guest.share + "/" + script)
        try FileManager.default.copyItem(atPath: GuestVM.repository + "/testbed/drivervm/" + script, toPath: guest.share + "/" + script)
        let roundTrips = "python3 /share/\(script) /dev/dri/card0 150"
        typealias Attempt = (native: [[Double]], guest: [Double], roundTrips: [Double], outputs: [String])
        let pace = { (a: Attempt) in flipPace(native: a.native, forwarded: a.guest, roundTrips: a.roundTrips) }
        let within = { (a: Attempt) in pace(a).kept }
        let attempt = try unlessTheHostWasBusy(
            "vkms page flips in the guest VM", failed: { !within($0) }, disturbed: { $0.native.contains { median($0) < 54 } }
        ) { () throws -> Attempt in
            let before = try vm.native(command, timeout: 120)
            let through = try guest.run("\(roundTrips); \(command); \(roundTrips)", timeout: 180)
            let after = try vm.native(command, timeout: 120)
            let lines = through.output.split(separator: "\n")
            let times = lines.filter { $0.hasPrefix("round_trip_us ") }.flatMap { $0.split(separator: " ").dropFirst().compactMap { Double($0) } }
            return ([flipRates(before.output), flipRates(after.output)], flipRates(through.output), times,
                    [before.output, through.output, after.output])
        }
        let nativeRates = attempt.native.flatMap { $0 }
        let (native, allowed, _) = pace(attempt)
        let rate = median(attempt.guest)
        print("vkms page flips in the guest VM, modetest -v for 12 s at \(pipe.mode): native median \(native) Hz, "
              + "guest VM median \(rate) Hz over \(attempt.guest.count) reports; forwarded round trip median "
              + "\(median(attempt.roundTrips)) us over \(attempt.roundTrips.count), the chain allows \(allowed) Hz")
        #expect(nativeRates.count >= 8 && native > 30 && native < 75, "\(attempt.outputs)")
        #expect(attempt.roundTrips.count >= 200, "\(attempt.outputs[1])")
        #expect(within(attempt), "native \(attempt.native) Hz, guest VM \(attempt.guest) Hz, bound 80 % of \(allowed) Hz")
    }
}
}

/// A forwarded flip rate against native: the native median and the rate the forwarded chain allows (the
/// lower of native and chainAllows), and whether `rate` keeps the pace: at least 80 % of what is allowed,
/// at most 120 % of native, over three reports at least.
func flipPace(native runs: [[Double]], forwarded rates: [Double], roundTrips: [Double]) -> (native: Double, allowed: Double, kept: Bool) {
    let native = median(runs.flatMap { $0 })
    let allowed = min(native, chainAllows(native: native, roundTripsMicroseconds: roundTrips))
    let rate = median(rates)
    return (native, allowed, rates.count >= 3 && rate >= 0.8 * allowed && rate <= 1.2 * native)
}

/// The flip rate the forwarded chain allows at `native` Hz: the round trips in order, three to a frame (the
/// event's read, the flip's ioctl, the poll's watch and its event), each frame lasting as many vblank periods
/// as its three need (one at least).
func chainAllows(native: Double, roundTripsMicroseconds times: [Double]) -> Double {
    let period = 1_000_000 / native
    var frames = 0.0, periods = 0.0
    for first in stride(from: 0, to: times.count - 2, by: 3) {
        let chain: Double = times[first] + times[first + 1] + times[first + 2]
        frames += 1
        periods += max(1, (chain / period).rounded(.up))
    }
    guard native > 0, frames > 0 else { return native }
    return native * frames / periods
}
