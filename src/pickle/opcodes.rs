//! The pickle opcodes: one name per byte, the one table the decoder, the encoder and error
//! messages share (before it, the decoder matched 59 unnamed bytes, the encoder 16, and a
//! hand-kept second table named them for errors).
//!
//! The names, bytes, protocols and first lines of the docs were generated from CPython's
//! `pickletools.opcodes` (all 68 of protocols 0-5); the unit test below checks that no byte or
//! name is used twice.

macro_rules! opcodes {
    ($($(#[$doc:meta])* $name:ident = $byte:expr;)*) => {
        $($(#[$doc])* pub(crate) const $name: u8 = $byte;)*

        /// Every opcode and its name, in `pickletools` order.
        pub(crate) const TABLE: &[(u8, &str)] = &[$(($name, stringify!($name))),*];
    };
}

opcodes! {
    /// Push an integer or bool. (protocol 0)
    INT = b'I';
    /// Push a four-byte signed integer. (protocol 1)
    BININT = b'J';
    /// Push a one-byte unsigned integer. (protocol 1)
    BININT1 = b'K';
    /// Push a two-byte unsigned integer. (protocol 1)
    BININT2 = b'M';
    /// Push a long integer. (protocol 0)
    LONG = b'L';
    /// Long integer using one-byte length. (protocol 2)
    LONG1 = 0x8a;
    /// Long integer using found-byte length. (protocol 2)
    LONG4 = 0x8b;
    /// Push a Python string object. (protocol 0)
    STRING = b'S';
    /// Push a Python string object. (protocol 1)
    BINSTRING = b'T';
    /// Push a Python string object. (protocol 1)
    SHORT_BINSTRING = b'U';
    /// Push a Python bytes object. (protocol 3)
    BINBYTES = b'B';
    /// Push a Python bytes object. (protocol 3)
    SHORT_BINBYTES = b'C';
    /// Push a Python bytes object. (protocol 4)
    BINBYTES8 = 0x8e;
    /// Push a Python bytearray object. (protocol 5)
    BYTEARRAY8 = 0x96;
    /// Push an out-of-band buffer object. (protocol 5)
    NEXT_BUFFER = 0x97;
    /// Make an out-of-band buffer object read-only. (protocol 5)
    READONLY_BUFFER = 0x98;
    /// Push None on the stack. (protocol 0)
    NONE = b'N';
    /// Push True onto the stack. (protocol 2)
    NEWTRUE = 0x88;
    /// Push False onto the stack. (protocol 2)
    NEWFALSE = 0x89;
    /// Push a Python Unicode string object. (protocol 0)
    UNICODE = b'V';
    /// Push a Python Unicode string object. (protocol 4)
    SHORT_BINUNICODE = 0x8c;
    /// Push a Python Unicode string object. (protocol 1)
    BINUNICODE = b'X';
    /// Push a Python Unicode string object. (protocol 4)
    BINUNICODE8 = 0x8d;
    /// Newline-terminated decimal float literal. (protocol 0)
    FLOAT = b'F';
    /// Float stored in binary form, with 8 bytes of data. (protocol 1)
    BINFLOAT = b'G';
    /// Push an empty list. (protocol 1)
    EMPTY_LIST = b']';
    /// Append an object to a list. (protocol 0)
    APPEND = b'a';
    /// Extend a list by a slice of stack objects. (protocol 1)
    APPENDS = b'e';
    /// Build a list out of the topmost stack slice, after markobject. (protocol 0)
    LIST = b'l';
    /// Push an empty tuple. (protocol 1)
    EMPTY_TUPLE = b')';
    /// Build a tuple out of the topmost stack slice, after markobject. (protocol 0)
    TUPLE = b't';
    /// Build a one-tuple out of the topmost item on the stack. (protocol 2)
    TUPLE1 = 0x85;
    /// Build a two-tuple out of the top two items on the stack. (protocol 2)
    TUPLE2 = 0x86;
    /// Build a three-tuple out of the top three items on the stack. (protocol 2)
    TUPLE3 = 0x87;
    /// Push an empty dict. (protocol 1)
    EMPTY_DICT = b'}';
    /// Build a dict out of the topmost stack slice, after markobject. (protocol 0)
    DICT = b'd';
    /// Add a key+value pair to an existing dict. (protocol 0)
    SETITEM = b's';
    /// Add an arbitrary number of key+value pairs to an existing dict. (protocol 1)
    SETITEMS = b'u';
    /// Push an empty set. (protocol 4)
    EMPTY_SET = 0x8f;
    /// Add an arbitrary number of items to an existing set. (protocol 4)
    ADDITEMS = 0x90;
    /// Build a frozenset out of the topmost slice, after markobject. (protocol 4)
    FROZENSET = 0x91;
    /// Discard the top stack item, shrinking the stack by one item. (protocol 0)
    POP = b'0';
    /// Push the top stack item onto the stack again, duplicating it. (protocol 0)
    DUP = b'2';
    /// Push markobject onto the stack. (protocol 0)
    MARK = b'(';
    /// Pop all the stack objects at and above the topmost markobject. (protocol 1)
    POP_MARK = b'1';
    /// Read an object from the memo and push it on the stack. (protocol 0)
    GET = b'g';
    /// Read an object from the memo and push it on the stack. (protocol 1)
    BINGET = b'h';
    /// Read an object from the memo and push it on the stack. (protocol 1)
    LONG_BINGET = b'j';
    /// Store the stack top into the memo. The stack is not popped. (protocol 0)
    PUT = b'p';
    /// Store the stack top into the memo. The stack is not popped. (protocol 1)
    BINPUT = b'q';
    /// Store the stack top into the memo. The stack is not popped. (protocol 1)
    LONG_BINPUT = b'r';
    /// Store the stack top into the memo. The stack is not popped. (protocol 4)
    MEMOIZE = 0x94;
    /// Extension code. (protocol 2)
    EXT1 = 0x82;
    /// Extension code. (protocol 2)
    EXT2 = 0x83;
    /// Extension code. (protocol 2)
    EXT4 = 0x84;
    /// Push a global object (module.attr) on the stack. (protocol 0)
    GLOBAL = b'c';
    /// Push a global object (module.attr) on the stack. (protocol 4)
    STACK_GLOBAL = 0x93;
    /// Push an object built from a callable and an argument tuple. (protocol 0)
    REDUCE = b'R';
    /// Finish building an object, via __setstate__ or dict update. (protocol 0)
    BUILD = b'b';
    /// Build a class instance. (protocol 0)
    INST = b'i';
    /// Build a class instance. (protocol 1)
    OBJ = b'o';
    /// Build an object instance. (protocol 2)
    NEWOBJ = 0x81;
    /// Build an object instance. (protocol 4)
    NEWOBJ_EX = 0x92;
    /// Protocol version indicator. (protocol 2)
    PROTO = 0x80;
    /// Stop the unpickling machine. (protocol 0)
    STOP = b'.';
    /// Indicate the beginning of a new frame. (protocol 4)
    FRAME = 0x95;
    /// Push an object identified by a persistent ID. (protocol 0)
    PERSID = b'P';
    /// Push an object identified by a persistent ID. (protocol 1)
    BINPERSID = b'Q';
}

/// Names by byte, built from [`TABLE`] at compile time.
const NAMES: [&str; 256] = {
    let mut names = ["unknown opcode"; 256];
    let mut i = 0;
    while i < TABLE.len() {
        names[TABLE[i].0 as usize] = TABLE[i].1;
        i += 1;
    }
    names
};

/// The name of an opcode (`"unknown opcode"` for a byte that is none), for error messages.
pub(crate) fn name(op: u8) -> &'static str {
    NAMES[op as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_and_name_is_used_once() {
        assert_eq!(TABLE.len(), 68, "protocols 0-5 have 68 opcodes");
        let mut bytes: Vec<u8> = TABLE.iter().map(|&(b, _)| b).collect();
        bytes.sort_unstable();
        bytes.dedup();
        assert_eq!(bytes.len(), TABLE.len());
        let mut names: Vec<&str> = TABLE.iter().map(|&(_, n)| n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), TABLE.len());
        assert_eq!(name(SHORT_BINSTRING), "SHORT_BINSTRING");
        assert_eq!(name(0xff), "unknown opcode");
    }
}
