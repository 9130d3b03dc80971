#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyward_core::internal::fuzz_ip_rules(data));
