//! serde's sequence and struct traits for our two serializers (`dump`'s pickler and `ser`'s
//! `to_value`): each serializer has one way to take an item and one to end; serde asks for the
//! same two methods under four sequence traits and two struct traits. These macros write the
//! traits once, forwarding to the serializer's inherent `element` / `field` and `done`.

/// `SerializeSeq`, `SerializeTuple`, `SerializeTupleStruct` and `SerializeTupleVariant` for
/// `$ty`, forwarding to its `element(&mut self, &T)` and `done(self)`.
macro_rules! forward_seq_traits {
    ($ty:ty, $ok:ty) => {
        forward_seq_traits!(@one $ty, $ok, SerializeSeq, serialize_element);
        forward_seq_traits!(@one $ty, $ok, SerializeTuple, serialize_element);
        forward_seq_traits!(@one $ty, $ok, SerializeTupleStruct, serialize_field);
        forward_seq_traits!(@one $ty, $ok, SerializeTupleVariant, serialize_field);
    };
    (@one $ty:ty, $ok:ty, $tr:ident, $method:ident) => {
        impl serde::ser::$tr for $ty {
            type Ok = $ok;
            type Error = $crate::pickle::PickleError;
            #[inline]
            fn $method<T: serde::Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Self::Error> {
                self.element(v)
            }
            #[inline(always)]
            fn end(self) -> Result<$ok, Self::Error> {
                self.done()
            }
        }
    };
}

/// `SerializeStruct` and `SerializeStructVariant` for `$ty`, forwarding to its
/// `field(&mut self, &'static str, &T)` and `done(self)`.
macro_rules! forward_struct_traits {
    ($ty:ty, $ok:ty) => {
        forward_struct_traits!(@one $ty, $ok, SerializeStruct);
        forward_struct_traits!(@one $ty, $ok, SerializeStructVariant);
    };
    (@one $ty:ty, $ok:ty, $tr:ident) => {
        impl serde::ser::$tr for $ty {
            type Ok = $ok;
            type Error = $crate::pickle::PickleError;
            #[inline]
            fn serialize_field<T: serde::Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                v: &T,
            ) -> Result<(), Self::Error> {
                self.field(key, v)
            }
            #[inline(always)]
            fn end(self) -> Result<$ok, Self::Error> {
                self.done()
            }
        }
    };
}
