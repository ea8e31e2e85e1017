//! The hub, under the name the benchmark runs it by (same program as `hub`), with one
//! addition: `MIMAMORI_BENCH_UNLOGGED_READS` set leaves reads out of the access log, the
//! baseline the `privacy` stage measures the read audit against. The `hub` program has
//! no such setting.

fn main() -> std::process::ExitCode {
    hub::cli::main_adjusted(|config| {
        if std::env::var_os("MIMAMORI_BENCH_UNLOGGED_READS").is_some() {
            config.privacy.read_audit = false;
        }
    })
}
