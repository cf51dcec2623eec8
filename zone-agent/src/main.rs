fn main() -> std::process::ExitCode {
    zone_agent::cli::main()
}
