// One row of a decode cache written in place: out = buf with out[index] = row.
//
// The output is the input buffer (the call aliases them), so when the caller donates the cache (or a
// loop carries it) nothing is copied. XLA's own update of a bf16 buffer on the CPU widens it to f32
// and back, and its update of the buffer's uint16 bits is not recognised as in place, so a donated
// 32K cache was copied whole each step. An index outside [0, rows) writes nothing (scatter's "drop").

#include <cstdint>
#include <cstring>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

ffi::Error SetRow(ffi::AnyBuffer buf, ffi::AnyBuffer row, ffi::Buffer<ffi::S32> index,
                  ffi::Result<ffi::AnyBuffer> out) {
  if (buf.element_type() != row.element_type() || buf.dimensions().size() == 0 ||
      row.size_bytes() * buf.dimensions()[0] != buf.size_bytes())
    return ffi::Error::InvalidArgument("gemma_set_row: row must be one row of buf, in its dtype");
  char* dst = static_cast<char*>(out->untyped_data());
  if (dst != buf.untyped_data()) std::memcpy(dst, buf.untyped_data(), buf.size_bytes());
  const int64_t i = index.typed_data()[0], rows = buf.dimensions()[0];
  if (i >= 0 && i < rows) std::memcpy(dst + i * row.size_bytes(), row.untyped_data(), row.size_bytes());
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(gemma_set_row, SetRow,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::AnyBuffer>());
