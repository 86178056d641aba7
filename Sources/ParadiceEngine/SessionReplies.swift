import CParadice
import ParadiceSystem
import ParadiceWire

/// What a session sends its guest. A guest that cannot take a frame is disconnected.
extension Session {
    func reply(_ request: UInt32, _ outcome: Result<Int64, Errno>, data: some Collection<UInt8> = [UInt8]()) {
        send(Reply.frame(request, outcome, data: data))
    }

    func reply(_ request: UInt32, result: Int64, data: [UInt8] = []) { reply(request, .success(result), data: data) }

    func fail(_ request: UInt32, _ error: Errno) { reply(request, .failure(error)) }

    func send(_ frame: Frame) {
        send(frame.encoded())
    }

    /// Sends an encoded frame; a guest that cannot take it is disconnected.
    func send(_ encoded: [UInt8]) {
        do { try socket.sendRaw(encoded) } catch { socket.shutdownBoth() }
    }
}
