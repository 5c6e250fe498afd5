//! `layercheck env`: what libtorch this binary runs on.

use layercheck::libtorch_env::LibtorchEnv;

#[derive(Debug, clap::Args)]
pub struct EnvArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: EnvArgs) -> super::CliResult {
    let env = LibtorchEnv::detect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&env)?);
    } else {
        println!("{env}");
    }
    Ok(())
}
