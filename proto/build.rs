//! Generates the Rust types of `oo/events/v1/*.proto` with prost-build, using the vendored
//! `protoc` so that no system package is needed.

const PROTOS: [&str; 6] = [
    "oo/events/v1/connection.proto",
    "oo/events/v1/envelope.proto",
    "oo/events/v1/policy.proto",
    "oo/events/v1/signals.proto",
    "oo/events/v1/tip.proto",
    "oo/events/v1/user.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    prost_build::Config::new()
        .protoc_executable(protoc)
        // `TipServed` is by far the largest payload; boxing it keeps `Payload` small.
        .boxed(".oo.events.v1.EventEnvelope.payload.tip_served")
        .compile_protos(&PROTOS, &["."])?;
    Ok(())
}
