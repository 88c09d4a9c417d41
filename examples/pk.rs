// breakage harness: pk FILE [mode]  mode: all (default)
use mpconn::pickle::{self, Value};
use std::time::Instant;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let data = std::fs::read(&args[1]).unwrap();
    let mode = args.get(2).cloned().unwrap_or("all".into());
    let h = std::thread::Builder::new().stack_size(256 * 1024).spawn(move || {
        let t = Instant::now();
        let r = pickle::loads_value(&data);
        eprintln!("decode: {:?} in {:?}", r.as_ref().map(|_| "ok").map_err(|e| e.to_string()), t.elapsed());
        let v = match r { Ok(v) => v, Err(_) => return };
        if mode.contains("repr") || mode == "all" {
            let t = Instant::now();
            let s = pickle::repr(&v);
            eprintln!("repr: {} chars in {:?}", s.len(), t.elapsed());
            if mode.contains("print") { println!("{}", s); }
            let t = Instant::now();
            let s2 = pickle::repr_limited(&v, 1 << 20);
            eprintln!("repr_limited: {} chars in {:?}", s2.len(), t.elapsed());
        }
        if mode.contains("eq") || mode == "all" {
            let t = Instant::now();
            let c = v.clone();
            eprintln!("clone {:?}", t.elapsed());
            let t = Instant::now();
            let e = c == v;
            eprintln!("eq {} {:?}", e, t.elapsed());
        }
        if mode.contains("enc") || mode == "all" {
            for p in [0u8, 2, 5] {
                let t = Instant::now();
                let r = pickle::dumps_value(&v, p);
                eprintln!("encode p{}: {:?} in {:?}", p, r.as_ref().map(|b| b.len()).map_err(|e| e.to_string()), t.elapsed());
                if let (Ok(b), true) = (r, mode.contains("out")) { std::fs::write(format!("/tmp/bp_out{}.pkl", p), b).unwrap(); }
            }
        }
        if mode.contains("serde") || mode == "all" {
            let t = Instant::now();
            let r: Result<Value, _> = pickle::from_value(&v);
            eprintln!("from_value<Value>: {:?} {:?}", r.as_ref().map(|_| ()).map_err(|e| e.to_string()), t.elapsed());
            let t = Instant::now();
            let data2 = pickle::dumps_value(&v, 5).unwrap_or_default();
            let r: Result<Value, _> = pickle::loads(&data2);
            eprintln!("loads<Value>: {:?} {:?}", r.as_ref().map(|_| ()).map_err(|e| e.to_string()), t.elapsed());
            let t = Instant::now();
            let r: Result<serde_json::Value, _> = pickle::loads(&data2);
            eprintln!("loads<json>: {:?} {:?}", r.as_ref().map(|_| ()).map_err(|e| e.to_string()), t.elapsed());
        }
        let t = Instant::now();
        drop(v);
        eprintln!("drop {:?}", t.elapsed());
    }).unwrap();
    if h.join().is_err() { eprintln!("PANIC"); std::process::exit(101); }
}
