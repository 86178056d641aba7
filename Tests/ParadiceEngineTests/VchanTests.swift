import CParadice
import Foundation
import ParadiceFrontendCore
import ParadiceTransport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Xen vchans (vchan:DOMID:/xenstore/path) on a machine without Xen: the forms parse or say why, and every
/// side that would open one (the backend's listener, the Swift client, the C frontends) refuses at once with
/// the reason, naming what is missing. Running a vchan needs Xen (the Xen test bed).
@Suite("Xen vchan endpoints")
struct VchanTests {
    static let xenRuns = access("/dev/xen/evtchn", F_OK) == 0

    @Test func formsParseOrSayWhy() throws {
        #expect(try Endpoint("vchan:0:/local/domain/0/data/paradice") == .vchan(domain: 0, path: "/local/domain/0/data/paradice"))
        #expect(try Endpoint("vchan:7:/local/domain/7/paradice-backend").description == "vchan:7:/local/domain/7/paradice-backend")
        let cases: [(String, String)] = [
            ("vchan:", "vchan:DOMID:XENSTORE-PATH"), ("vchan:x:/a", "vchan:DOMID:XENSTORE-PATH"), ("vchan:-1:/a", "vchan:DOMID"),
            ("vchan:99999:/a", "vchan:DOMID"), ("vchan:1", "vchan:DOMID"), ("vchan:1:relative", "absolute"),
            ("vchan:1:/a//b", "absolute"), ("vchan:1:/a/", "absolute"), ("vchan:1:/a b", "[A-Za-z0-9/_.@-]"),
            ("vchan:1:", "absolute"),
        ]
        for (url, why) in cases {
            #expect {
                _ = try Endpoint(url)
            } throws: { error in
                guard case TransportError.badEndpoint(let named, let reason) = error else { return false }
                return named == url && reason.contains(why)
            }
        }
    }

    @Test func aClientWithoutXenIsToldSo() throws {
        #expect {
            _ = try FrameSocket.connect(.vchan(domain: 0, path: "/local/domain/0/data/paradice"))
        } throws: { error in
            guard case TransportError.badEndpoint(_, let reason) = error else { return false }
            return Self.xenRuns ? reason.contains("libxenvchan_client_init") : reason.contains("Xen is not running here")
        }
    }

    @Test func theBackendRefusesToListenWithoutXen() throws {
        guard !Self.xenRuns else { return }
        let refused = try run(productsFolder + "/paradice-backend", ["--listen", "vchan:1:/local/domain/0/paradice", "--device", "/dev/null"])
        #expect(refused.status != 0)
        #expect(refused.output.contains("vchan:1:/local/domain/0/paradice") && refused.output.contains("Xen is not running here"),
                "\(refused.output)")
    }

    @Test func theCFrontendsSayWhy() throws {
        guard !Self.xenRuns else { return }
        let result = try paradiceRun("vchan:0:/local/domain/0/data/paradice", ["stty", "-F", "/dev/ptmx", "-a"])
        #expect(result.status != 0)
        #expect(result.errors.contains("cannot reach the backend at vchan:0:/local/domain/0/data/paradice")
                && result.errors.contains("Xen is not running here"), "\(result.errors)")
        var stream = pd_stream(ops: nil, fd: -1, state: nil)
        var why: UnsafePointer<CChar>? = nil
        #expect(pd_stream_vchan(&stream, "0:/local/domain/0/data/paradice", &why) == -1 && errno == ENODEV)
        #expect(pd_stream_vchan(&stream, "zero:/x", &why) == -1 && errno == EINVAL)
    }
}
