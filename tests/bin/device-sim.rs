//! device-sim, as a binary of the test package so that `cargo test` builds it first.

fn main() -> std::process::ExitCode {
    device_sim::cli::main()
}
