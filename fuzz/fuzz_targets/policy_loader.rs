//! Arbitrary bytes as a policy file: parse, validate and compile must never panic, and every
//! diagnostic must be located (the checks are `zone_agent::fuzzing::policy_loader`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| zone_agent::fuzzing::policy_loader(data));
