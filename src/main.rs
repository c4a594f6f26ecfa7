fn main() {
    std::process::exit(nm_multiwan::cli::main());
}
