//! The floor for pipe figures measured here: a synchronous message-mode pipe with nothing on
//! top, one thread writing 100,000 messages of 64 bytes and one reading them, in one process.
//! mpconn's pipe figures are read against it (under Wine every pipe operation goes through its
//! `wineserver`, so absolute figures say nothing about Windows). Windows only:
//!
//! ```text
//! cargo bench --bench pipe_floor --target x86_64-pc-windows-gnu
//! ```
//! It prints one JSON line in BENCH.md's format.

#[cfg(windows)]
fn main() {
    use std::time::Instant;

    use windows_sys::Win32::Foundation::{CloseHandle, GENERIC_READ, GENERIC_WRITE, INVALID_HANDLE_VALUE};
    use windows_sys::Win32::Storage::FileSystem::{
        CreateFileW, OPEN_EXISTING, PIPE_ACCESS_DUPLEX, ReadFile, WriteFile,
    };
    use windows_sys::Win32::System::Pipes::{
        ConnectNamedPipe, CreateNamedPipeW, PIPE_READMODE_MESSAGE, PIPE_TYPE_MESSAGE, PIPE_WAIT,
    };

    const N: usize = 100_000;
    let name: Vec<u16> =
        format!(r"\\.\pipe\mpconn-floor-{}", std::process::id()).encode_utf16().chain(Some(0)).collect();
    // SAFETY: plain Win32 calls on handles made here, with buffers that outlive each call.
    unsafe {
        let server = CreateNamedPipeW(
            name.as_ptr(),
            PIPE_ACCESS_DUPLEX,
            PIPE_TYPE_MESSAGE | PIPE_READMODE_MESSAGE | PIPE_WAIT,
            1,
            8192,
            8192,
            0,
            std::ptr::null(),
        );
        assert!(server != INVALID_HANDLE_VALUE, "CreateNamedPipeW failed");
        let client_name = name.clone();
        let writer = std::thread::spawn(move || {
            let h = CreateFileW(
                client_name.as_ptr(),
                GENERIC_READ | GENERIC_WRITE,
                0,
                std::ptr::null(),
                OPEN_EXISTING,
                0,
                std::ptr::null_mut(),
            );
            assert!(h != INVALID_HANDLE_VALUE, "CreateFileW failed");
            let msg = [7u8; 64];
            for _ in 0..N {
                let mut written = 0u32;
                assert!(WriteFile(h, msg.as_ptr(), 64, &mut written, std::ptr::null_mut()) != 0);
            }
            CloseHandle(h);
        });
        ConnectNamedPipe(server, std::ptr::null_mut());
        let start = Instant::now();
        let mut buf = [0u8; 8192];
        let mut got = 0;
        while got < N {
            let mut read = 0u32;
            if ReadFile(server, buf.as_mut_ptr(), buf.len() as u32, &mut read, std::ptr::null_mut()) == 0 {
                break;
            }
            got += 1;
        }
        let secs = start.elapsed().as_secs_f64();
        writer.join().expect("writer");
        CloseHandle(server);
        println!(
            "{{\"impl\": \"raw-sync-pipe\", \"workload\": \"W1\", \"family\": \"pipe\", \"value\": {:.3}, \"unit\": \"msg/s\", \"n\": {got}}}",
            got as f64 / secs
        );
    }
}

#[cfg(not(windows))]
fn main() {
    eprintln!("pipe_floor measures Windows named pipes: run it with --target x86_64-pc-windows-gnu");
}
