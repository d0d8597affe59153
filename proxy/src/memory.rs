//! Hands memory jemalloc holds freed back to the kernel at once: what the binary installs
//! as `sluice_proxy_core::memory::release`. jemalloc returns freed pages after a decay time
//! (1 s, `.cargo/config.toml`); memory freed in a burst — a parsed manifest file, one part
//! of a large sync — would otherwise still be resident when the next burst allocates,
//! and the two would add up (issue 14: 78 → 61 MiB peak at 10,000 Services, with the
//! manifests parsed twice instead of held).

use tikv_jemalloc_ctl::{Access, AsName};

/// Returns every unused dirty page of jemalloc's arenas to the kernel now.
pub fn trim() {
    // An arena whose decay time is set to 0 purges its unused dirty pages there and then
    // (setting any other time leaves them to the background thread's pace); the setting is
    // then put back. Per arena: the all-arenas index is refused for this setting, and an
    // arena not in use refuses it too.
    let decay: isize = b"arenas.dirty_decay_ms\0".name().read().unwrap_or(1000);
    let arenas: u32 = b"arenas.narenas\0".name().read().unwrap_or(1);
    for i in 0..arenas {
        let name = format!("arena.{i}.dirty_decay_ms\0");
        let setting = name.as_str().name();
        if setting.write(0isize).is_ok() {
            let _ = setting.write(decay);
        }
    }
}
