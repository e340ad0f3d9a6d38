#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ptags_fuzz::search_index(data));
