import Foundation
import LoadgenFuzz

/// libFuzzer's entry point: the target named by LOADGEN_FUZZ_TARGET (frames, messages, http, request, parsers).
/// Built with `-sanitize=fuzzer,address -DFUZZING`, `main` hands over to libFuzzer's driver (see deploy/fuzz/run.sh);
/// built plainly, this is a replayer: `loadgen-fuzz TARGET FILE...` runs each file through the target once.
@_cdecl("LLVMFuzzerTestOneInput")
public func loadgenFuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    FuzzSelection.target.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

enum FuzzSelection {
    static let target: FuzzTarget = {
        let name = ProcessInfo.processInfo.environment["LOADGEN_FUZZ_TARGET"] ?? ""
        guard let target = FuzzTarget(rawValue: name) else {
            FileHandle.standardError.write(Data("LOADGEN_FUZZ_TARGET must be one of \(FuzzTarget.allCases.map(\.rawValue).joined(separator: ", ")); got '\(name)'.\n".utf8))
            exit(2)
        }
        return target
    }()
}

#if FUZZING
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

/// SwiftPM links an executable's `main` to `<module>_main`: here that is libFuzzer's driver.
@_cdecl("loadgen_fuzz_main")
func fuzzDriverMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    _ = FuzzSelection.target
    var count = argc
    var vector = argv
    return LLVMFuzzerRunDriver(&count, &vector) { data, size in loadgenFuzzOne(data, size) }
}
#else
@main
struct Replay {
    static func main() {
        let arguments = CommandLine.arguments.dropFirst()
        guard let name = arguments.first, let target = FuzzTarget(rawValue: name) else {
            print("usage: loadgen-fuzz TARGET FILE...   (TARGET: \(FuzzTarget.allCases.map(\.rawValue).joined(separator: ", ")))")
            exit(2)
        }
        for path in arguments.dropFirst() {
            guard let data = FileManager.default.contents(atPath: path) else {
                print("cannot read \(path)")
                exit(2)
            }
            target.run(Array(data))
        }
        print("replayed \(arguments.count - 1) inputs through \(name)")
    }
}
#endif
