use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "pyshrink", version, about)]
pub struct Cli {}
