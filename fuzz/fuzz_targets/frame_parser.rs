//! Arbitrary bytes as a few frames through the model's frame parser and the model, under a
//! fixed policy (the input format and checks are `zone_agent::fuzzing::frame_parser`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    zone_agent::fuzzing::frame_parser(data);
});
