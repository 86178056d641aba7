import CParadice
import Foundation
import ParadiceClient
import Testing
#if canImport(Glibc)
import Glibc
#endif

extension DriverVMSuites {
/// The same frames over vsock (backend and frontend both in the driver VM, through vsock_loopback) and over
/// the virtio-serial port "paradice" (a frontend on this machine, through QEMU's chardev socket, to the
/// backend that listens on the port in the VM).
@Suite("Transports: vsock and virtio-serial")
struct Transports {
    static func stable(_ text: String) -> [Substring] { text.split(separator: "\n").filter { !$0.contains("volatile") } }

    @Test func v4l2CtlThroughVsockInTheVMMatchesNative() throws {
        let vm = try DriverVM.require()
        let native = try vm.native("v4l2-ctl -d /dev/video0 --all")
        let forwarded = try vm.native("/share/bin/paradice run --backend vsock://1:7000 -- v4l2-ctl -d /dev/video0 --all")
        #expect(native.status == 0 && forwarded.status == 0, "\(forwarded.output)")
        #expect(Self.stable(forwarded.output) == Self.stable(native.output))
        #expect(try vm.native("/share/bin/paradice run --backend vsock://1:7000 -- v4l2-ctl -d /dev/video0 -c brightness=77").status == 0)
        #expect(try vm.native("v4l2-ctl -d /dev/video0 -C brightness").output.contains("brightness: 77"))
        _ = try vm.native("v4l2-ctl -d /dev/video0 -c brightness=128")
    }

    /// A pty opened natively in the VM, read and set by stty through a backend on vsock in the same VM.
    @Test func sttyOnAPtyThroughVsockInTheVM() throws {
        let vm = try DriverVM.require()
        let script = #"""
        /share/bin/paradice-backend --listen vsock://any:7101 --specs /share/Specs --device /dev/ptmx --device '/dev/pts/*' > /tmp/pty-backend.log 2>&1 &
        b=$!
        i=0
        until /share/bin/paradice devices --backend vsock://1:7101 > /dev/null 2>&1; do
          i=$((i + 1)); [ $i -lt 600 ] || { echo "no backend on vsock://1:7101"; cat /tmp/pty-backend.log; kill $b; exit 2; }; sleep 0.2
        done
        python3 - <<'PY'
        import fcntl, os, struct, subprocess, termios
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack('HHHH', 33, 77, 0, 0))
        name = os.ttyname(slave)
        run = lambda *a: subprocess.run(list(a), capture_output=True, text=True)
        forward = ['/share/bin/paradice', 'run', '--backend', 'vsock://1:7101', '--']
        native = run('stty', '-F', name, '-a')
        forwarded = run(*forward, 'stty', '-F', name, '-a')
        print('same-a', native.returncode == 0 and forwarded.returncode == 0 and native.stdout == forwarded.stdout)
        print('forwarded-a', forwarded.returncode, forwarded.stdout.splitlines()[:1], forwarded.stderr)
        set_ = run(*forward, 'stty', '-F', name, 'rows', '40', 'cols', '100', '-echo')
        rows, cols = struct.unpack('HHHH', fcntl.ioctl(slave, termios.TIOCGWINSZ, b'\0' * 8))[:2]
        echo = termios.tcgetattr(slave)[3] & termios.ECHO
        print('set', set_.returncode, rows, cols, 'echo' if echo else '-echo', set_.stderr)
        PY
        kill $b
        """#
        let r = try vm.native(script)
        #expect(r.status == 0, "\(r.output)")
        #expect(r.output.contains("same-a True"), "\(r.output)")
        #expect(r.output.contains("set 0 40 100 -echo"), "\(r.output)")
    }

    @Test func v4l2CtlFromThisMachineThroughVirtioSerialMatchesNative() throws {
        let vm = try DriverVM.require()
        let serial = "serial:" + vm.folder + "/serial.sock"
        let native = try vm.native("v4l2-ctl -d /dev/video0 --all")
        let forwarded = try paradiceRun(serial, ["v4l2-ctl", "-d", "/dev/video0", "--all"], timeout: 600)
        #expect(native.status == 0 && forwarded.status == 0, "\(forwarded.output)\(forwarded.errors)")
        #expect(Self.stable(forwarded.output) == Self.stable(native.output))
        let set = try paradiceRun(serial, ["v4l2-ctl", "-d", "/dev/video0", "-c", "brightness=66"], timeout: 600)
        #expect(set.status == 0, "\(set.errors)")
        #expect(try vm.native("v4l2-ctl -d /dev/video0 -C brightness").output.contains("brightness: 66"))
        _ = try vm.native("v4l2-ctl -d /dev/video0 -c brightness=128")
    }

    /// A peer of the port that sends garbage, one that goes away within a frame, and one that says HELLO
    /// again within its session: each ends its own session, and the next peer's session works. (QEMU may
    /// drop what a peer sent just before it went away, so a bad peer waits for the backend's answer.)
    @Test func badSerialPeersEndOnlyTheirOwnSessions() throws {
        let vm = try DriverVM.require()
        let path = vm.folder + "/serial.sock"
        let log = vm.folder + "/share/backend.log"
        func logged(_ what: String) -> Int {
            ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").split(separator: "\n").filter { $0.contains(what) }.count
        }
        func waitFor(_ what: String, past count: Int) {
            var waited = 0
            while logged(what) <= count && waited < 1200 { usleep(100_000); waited += 1 }
            #expect(logged(what) > count, "the backend did not log '\(what)'")
        }
        // Garbage: a length past any limit.
        do {
            let before = logged("malformed frame")
            let guest = try RawGuest("unix:" + path)
            var garbage = [UInt8](repeating: 0xA5, count: 4096)
            garbage.replaceSubrange(0..<4, with: [0xff, 0xff, 0xff, 0x7f])
            #expect(guest.send(garbage))
            waitFor("malformed frame", past: before)
        }
        // A session that goes away within a frame: a request announcing 100 bytes, 10 of them.
        do {
            let before = logged("guest connection ended") + logged("guest disconnected")
            let guest = try RawGuest("unix:" + path)
            #expect(guest.hello("half a frame"))
            #expect(guest.send(RawGuest.frame(op: PD_OPEN.code, request: guest.newRequest(), body: [UInt8](repeating: 0x2f, count: 10), length: 100)))
            var waited = 0
            while logged("guest connection ended") + logged("guest disconnected") <= before && waited < 1200 {
                if waited == 0 { shutdown(guest.fd, Int32(SHUT_RDWR)) }   // the peer goes away mid-frame
                usleep(100_000); waited += 1
            }
            #expect(logged("guest connection ended") + logged("guest disconnected") > before)
        }
        // A new frontend whose predecessor's end the port did not show: its HELLO opens the next session.
        do {
            let guest = try RawGuest("unix:" + path)
            #expect(guest.hello("first"))
            #expect(guest.hello("second"))
            #expect(guest.open("/dev/video0").error == 0)
        }
        let client = try ParadiceClient.connect("serial:" + path, name: "transport test")
        #expect(!client.devices.isEmpty)
        client.disconnect()
        // The backend still serves its other guests.
        #expect(try vm.forwarded(["v4l2-ctl", "-d", "/dev/video0", "--info"]).status == 0)
    }
}
}

extension DriverVMSuites.GuestVMSuites {
/// The other way through the port: the preload frontend in the guest VM, through its
/// /dev/virtio-ports/paradice, to a backend on this machine that listens on QEMU's socket for the port.
@Suite("A backend on this machine through the guest VM's virtio-serial port")
struct SerialFromTheGuest {
    @Test func sttyInTheGuestVMReadsAndSetsAPtyOfThisMachine() throws {
        let guest = try GuestVM.require()
        let backend = try BackendProcess(devices: ["/dev/ptmx", "/dev/pts/*"], extra: ["--listen", "serial:" + guest.folder + "/serial.sock"])
        _ = backend
        let master = open("/dev/ptmx", O_RDWR | O_NOCTTY)
        #expect(master >= 0)
        defer { close(master) }
        var number: UInt32 = 0, unlock: Int32 = 0
        #expect(ioctl(master, UInt(Ioctl.TIOCGPTN), &number) == 0 && ioctl(master, UInt(Ioctl.TIOCSPTLCK), &unlock) == 0)
        let name = "/dev/pts/\(number)"
        let slave = open(name, O_RDWR | O_NOCTTY)
        #expect(slave >= 0)
        defer { close(slave) }
        var size = winsize(ws_row: 21, ws_col: 55, ws_xpixel: 0, ws_ypixel: 0)
        #expect(ioctl(slave, UInt(TIOCSWINSZ), &size) == 0)
        let native = try run("/usr/bin/stty", ["-F", name, "-a"])
        let forward = "/share/bin/paradice run --backend serial:/dev/virtio-ports/paradice -- "
        let inGuest = try guest.run(forward + "stty -F \(name) -a")
        #expect(native.status == 0 && inGuest.status == 0, "\(inGuest.output)")
        #expect(inGuest.output == native.output)
        // Again (a session after one that the port did not see end), and setting this time.
        let set = try guest.run(forward + "stty -F \(name) rows 44 cols 111 -echo")
        #expect(set.status == 0, "\(set.output)")
        #expect(ioctl(slave, UInt(TIOCGWINSZ), &size) == 0)
        #expect(size.ws_row == 44 && size.ws_col == 111)
        var attributes = termios()
        #expect(tcgetattr(slave, &attributes) == 0)
        #expect(attributes.c_lflag & UInt32(ECHO) == 0)
    }
}
}
