//! The `device-sim` binary: everything lives in the library so other binaries can start it.

fn main() -> std::process::ExitCode {
    device_sim::cli::main()
}
