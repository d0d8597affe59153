#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice_fuzz::etcd_leases(data));
