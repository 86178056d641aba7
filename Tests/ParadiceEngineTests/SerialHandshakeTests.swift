import CParadice
import Foundation
import ParadiceClient
import ParadiceFrontendCore
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A frontend on a virtio-serial port's chardev socket (a unix socket that `serial:` names) whose PD_HELLO
/// is lost on the way says it again on a new connection, and closes the one that got no answer.
@Suite("serial: a lost PD_HELLO", .timeLimit(.minutes(1)))
struct SerialHandshakeTests {
    @Test func aHandshakeWithoutAnAnswerIsMadeAgainOnANewConnection() throws {
        let backend = try BackendProcess(devices: ["/dev/ptmx"])
        let path = backend.folder + "/serial.sock"
        let relay = try FrameCountingRelay(to: backend.unixEndpoint, at: path, losing: 2)
        let client = try ParadiceClient.connect("serial:" + path, name: "lost hello")
        #expect(client.devices.map(\.path) == ["/dev/ptmx"])
        #expect(relay.count(of: PD_HELLO.code) == 1, "the third connection's PD_HELLO reached the backend")
        var waited = 0
        while relay.lostConnections.ended < 2 && waited < 100 { usleep(50_000); waited += 1 }
        let lost = relay.lostConnections
        #expect(lost.ended == 2, "the frontend closed both connections that got no answer")
        #expect(lost.bytes >= 2 * (MemoryLayout<pd_header>.size + MemoryLayout<pd_hello>.size), "each carried a PD_HELLO")
    }

    /// Over a plain unix socket the frontend does not give up on a backend that answers late.
    @Test func aUnixHandshakeWaitsForItsAnswer() throws {
        let backend = try BackendProcess(devices: ["/dev/ptmx"])
        let relay = try FrameCountingRelay(to: backend.unixEndpoint, at: backend.folder + "/relay.sock", losing: 1)
        final class Outcome: @unchecked Sendable { var result: Result<Int, any Error>? }   // under `finished`
        let finished = NSCondition(), outcome = Outcome()
        Thread.detachNewThread {
            let r = Result { try ParadiceClient.connect(relay.endpoint, name: "patient").devices.count }
            finished.withLock { outcome.result = r; finished.broadcast() }
        }
        usleep(UInt32(PD_HELLO_SILENCE_MS + 1000) * 1000)
        let lost = relay.lostConnections
        #expect(lost.bytes == MemoryLayout<pd_header>.size + MemoryLayout<pd_hello>.size + "patient".utf8.count && lost.ended == 0,
                "one PD_HELLO, and the connection still waits")
        #expect(relay.count(of: PD_HELLO.code) == 0)
        #expect(finished.withLock { outcome.result == nil })
        relay.endLostConnections()   // the frontend then fails, and its thread ends
        let ended = finished.withLock { () -> Bool in
            while outcome.result == nil { if !finished.wait(until: Date().addingTimeInterval(10)) { break } }
            return outcome.result != nil
        }
        #expect(ended)
        if case .success = finished.withLock({ outcome.result }) { Issue.record("a connection without an answer succeeded") }
    }
}
