// Image file -> RGB (libjpeg-turbo, libpng) and pixels -> model input, bit for bit what Pillow gives:
// Image.open(...).convert("RGB"), resize of the short side with Pillow's resampling (libImaging/Resample.c),
// center crop (Image.crop: outside the image is 0), raw CHW uint8 or normalized float32. Decoding is bounded:
// the header's size is checked against image_limits() before any large allocation.
#include <algorithm>
#include <csetjmp>
#include <cmath>
#include <cstdio>
#include <cerrno>
#include <climits>
#include <cstring>

#include <jpeglib.h>
#include <jerror.h>
#include <png.h>

#include "internal.h"

namespace edgevit {
namespace {

// ---- decoding -------------------------------------------------------------------------------

// The limit message of an image of w x h pixels whose decoder needs `row_bytes` per row plus `extra` bytes;
// nullptr within the limits. Kept in a static buffer: the decoders copy it before any longjmp.
const char *over_limits(uint64_t w, uint64_t h, uint64_t row_bytes, uint64_t extra) {
  static thread_local char message[200];
  const ImageLimits &limits = image_limits();
  if (w * h > limits.max_pixels) {
    std::snprintf(message, sizeof(message), "%llu x %llu pixels is more than the limit of %llu pixels (--max-pixels)",
                  (unsigned long long)w, (unsigned long long)h, (unsigned long long)limits.max_pixels);
    return message;
  }
  if ((unsigned __int128)row_bytes * h + extra > limits.max_bytes) {
    std::snprintf(message, sizeof(message), "%llu x %llu pixels needs %llu MiB to decode, more than the limit of %llu MiB",
                  (unsigned long long)w, (unsigned long long)h, (unsigned long long)(((unsigned __int128)row_bytes * h + extra) >> 20),
                  (unsigned long long)(limits.max_bytes >> 20));
    return message;
  }
  return nullptr;
}

struct JpegErrors {
  jpeg_error_mgr mgr;
  jmp_buf jump;
  char message[JMSG_LENGTH_MAX > 200 ? JMSG_LENGTH_MAX : 200];
};

void jpeg_fail(j_common_ptr info) {
  auto *errors = reinterpret_cast<JpegErrors *>(info->err);
  (*info->err->format_message)(info, errors->message);
  longjmp(errors->jump, 1);
}

// Warnings are ignored as Pillow ignores them, except a file that ends early: Pillow refuses it
// ("image file is truncated"), where libjpeg would fill the rest with gray.
void jpeg_message(j_common_ptr info, int level) {
  if (level == -1 && info->err->msg_code == JWRN_JPEG_EOF) jpeg_fail(info);
}

// Returns an error message, or "" on success. No C++ object with a destructor lives in this frame
// between setjmp and a longjmp.
std::string decode_jpeg(FILE *file, DecodedImage &out) {
  jpeg_decompress_struct info;
  JpegErrors errors;
  info.err = jpeg_std_error(&errors.mgr);
  errors.mgr.error_exit = jpeg_fail;
  errors.mgr.emit_message = jpeg_message;
  if (setjmp(errors.jump)) {
    jpeg_destroy_decompress(&info);
    return errors.message;
  }
  jpeg_create_decompress(&info);
  jpeg_stdio_src(&info, file);
  jpeg_read_header(&info, TRUE);
  if (const char *over = over_limits(info.image_width, info.image_height, uint64_t(info.image_width) * 4, 0)) {
    std::snprintf(errors.message, sizeof(errors.message), "%s", over);
    jpeg_destroy_decompress(&info);
    return errors.message;
  }
  // libjpeg's own buffers (a progressive file keeps every coefficient) within what is left of the bound
  info.mem->max_memory_to_use = long(std::min<uint64_t>(image_limits().max_bytes, uint64_t(LONG_MAX)));
  // Pillow opens CMYK / YCCK files as CMYK with Adobe's inverted convention ("CMYK;I").
  bool cmyk = info.jpeg_color_space == JCS_CMYK || info.jpeg_color_space == JCS_YCCK;
  info.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;  // gray is replicated, as Pillow's L -> RGB
  jpeg_start_decompress(&info);
  out.width = int(info.output_width);
  out.height = int(info.output_height);
  size_t row_bytes = size_t(out.width) * info.output_components;
  out.pixels.resize(row_bytes * out.height + (cmyk ? row_bytes : 0));
  while (info.output_scanline < info.output_height) {
    JSAMPROW row = out.pixels.data() + (cmyk ? out.pixels.size() - row_bytes : row_bytes * info.output_scanline);
    int y = int(info.output_scanline);
    jpeg_read_scanlines(&info, &row, 1);
    if (cmyk) {  // Pillow's cmyk2rgb on the inverted samples, into RGB row y
      uint8_t *rgb = out.pixels.data() + size_t(y) * out.width * 3;
      for (int x = 0; x < out.width; ++x) {
        int nk = row[4 * x + 3];  // 255 - (255 - k)
        for (int c = 0; c < 3; ++c) {
          int tmp = (255 - row[4 * x + c]) * nk + 128;
          rgb[3 * x + c] = uint8_t(std::max(0, nk - (((tmp >> 8) + tmp) >> 8)));
        }
      }
    }
  }
  jpeg_finish_decompress(&info);
  jpeg_destroy_decompress(&info);
  if (cmyk) out.pixels.resize(size_t(out.width) * out.height * 3);
  return "";
}

struct PngErrors {
  char message[200] = "";
};

void png_fail(png_structp png, png_const_charp message) {
  auto *errors = static_cast<PngErrors *>(png_get_error_ptr(png));
  std::snprintf(errors->message, sizeof(errors->message), "%s", message);
  png_longjmp(png, 1);
}

void png_ignore(png_structp, png_const_charp) {}

// Palette, gray, 16-bit and alpha become 8-bit RGB the way Pillow's convert("RGB") does: palette
// colors looked up, gray replicated, the high byte of 16-bit samples kept, alpha dropped (not composited).
std::string decode_png(FILE *file, DecodedImage &out) {
  PngErrors errors;
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &errors, png_fail, png_ignore);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!info) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    return "out of memory";
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    return errors.message;
  }
  png_init_io(png, file);
  png_set_chunk_malloc_max(png, std::min<png_alloc_size_t>(8u << 20, image_limits().max_bytes));
  png_read_info(png, info);
  {
    const uint64_t w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    // RGB result, plus 16-bit gray rows and the row pointers
    if (const char *over = over_limits(w, h, w * 5 + sizeof(void *), 0)) png_error(png, over);
  }
  // 16-bit gray opens as Pillow's I;16, whose RGB is min(v, 255); every other 16-bit kind keeps its high byte.
  const bool gray16 = png_get_color_type(png, info) == PNG_COLOR_TYPE_GRAY && png_get_bit_depth(png, info) == 16;
  png_set_expand(png);  // palette -> RGB, gray < 8 bits -> 8 bits, tRNS -> alpha (dropped below)
  png_set_strip_alpha(png);
  if (!gray16) {
    png_set_strip_16(png);
    png_set_gray_to_rgb(png);
  }
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  const size_t row_bytes = png_get_rowbytes(png, info);
  if (gray16 ? png_get_channels(png, info) != 1 : png_get_channels(png, info) != 3 || png_get_bit_depth(png, info) != 8)
    png_error(png, "unsupported PNG format");
  out.width = int(png_get_image_width(png, info));
  out.height = int(png_get_image_height(png, info));
  const size_t rgb_bytes = size_t(out.width) * out.height * 3;
  out.pixels.resize(gray16 ? rgb_bytes + row_bytes * out.height : rgb_bytes);
  uint8_t *rows = out.pixels.data() + (gray16 ? rgb_bytes : 0);  // 16-bit rows after the RGB result
  out.rows.resize(out.height);
  for (int y = 0; y < out.height; ++y) out.rows[y] = rows + size_t(y) * row_bytes;
  png_read_image(png, out.rows.data());
  png_read_end(png, nullptr);
  png_destroy_read_struct(&png, &info, nullptr);
  if (gray16) {
    for (size_t i = 0; i < size_t(out.width) * out.height; ++i) {
      const uint8_t *sample = rows + (i / out.width) * row_bytes + (i % out.width) * 2;  // big-endian
      uint8_t v = sample[0] == 0 ? sample[1] : 255;
      out.pixels[3 * i] = out.pixels[3 * i + 1] = out.pixels[3 * i + 2] = v;
    }
    out.pixels.resize(rgb_bytes);
  }
  return "";
}

// ---- Pillow's resampling --------------------------------------------------------------------

constexpr int kPrecisionBits = 32 - 8 - 2;
constexpr int64_t kMaxResized = int64_t(1) << 30;  // longest resized side computed (Pillow would need it all)

double bicubic(double x) {  // a = -0.5
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

double bilinear(double x) {
  if (x < 0.0) x = -x;
  return x < 1.0 ? 1.0 - x : 0.0;
}

// precompute_coeffs + normalize_coeffs_8bpc of Resample.c for the box [0, in_size], for the output pixels
// [first_out, first_out + n_out) only (those the crop keeps).
void compute_taps(int in_size, int out_size, bool use_bicubic, int first_out, int n_out, Preprocess::Taps &t) {
  double (*filter)(double) = use_bicubic ? bicubic : bilinear;
  double scale = double(float(in_size) - 0.0f) / out_size;
  double filterscale = scale < 1.0 ? 1.0 : scale;
  double support = (use_bicubic ? 2.0 : 1.0) * filterscale;
  t.ksize = int(std::ceil(support)) * 2 + 1;
  t.first_out = first_out;
  t.first.resize(n_out);
  t.count.resize(n_out);
  t.weights.assign(size_t(n_out) * t.ksize, 0.0);
  t.k.resize(t.weights.size());
  double inv_filterscale = 1.0 / filterscale;
  for (int i = 0; i < n_out; ++i) {
    double center = 0.0f + (first_out + i + 0.5) * scale;
    int xmin = std::max(0, int(center - support + 0.5));
    int xmax = std::min(in_size, int(center + support + 0.5)) - xmin;
    double *k = &t.weights[size_t(i) * t.ksize];
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      k[x] = filter((x + xmin - center + 0.5) * inv_filterscale);
      ww += k[x];
    }
    if (ww != 0.0)
      for (int x = 0; x < xmax; ++x) k[x] /= ww;
    t.first[i] = xmin;
    t.count[i] = std::max(xmax, 0);
  }
  for (size_t i = 0; i < t.k.size(); ++i) {
    double w = t.weights[i];
    t.k[i] = w < 0 ? int(-0.5 + w * (1 << kPrecisionBits)) : int(0.5 + w * (1 << kPrecisionBits));
  }
}

inline uint8_t clip8(int value) {
  value >>= kPrecisionBits;
  return uint8_t(value < 0 ? 0 : value > 255 ? 255 : value);
}

// `rows` rows of the taps' nx output columns: in(row, column c) is at in + row * in_stride + (c - in_x0) * 3.
void pass_horizontal(const uint8_t *in, ptrdiff_t in_stride, int in_x0, int rows, const Preprocess::Taps &t,
                     int nx, uint8_t *out, ptrdiff_t out_stride) {
  for (int y = 0; y < rows; ++y) {
    const uint8_t *line = in + y * in_stride;
    uint8_t *dst = out + y * out_stride;
    for (int x = 0; x < nx; ++x) {
      int first = t.first[x] - in_x0, count = t.count[x];
      const int32_t *k = &t.k[size_t(x) * t.ksize];
      int s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
      for (int i = 0; i < count; ++i) {
        const uint8_t *p = line + ptrdiff_t(first + i) * 3;
        s0 += p[0] * k[i];
        s1 += p[1] * k[i];
        s2 += p[2] * k[i];
      }
      dst[3 * x] = clip8(s0);
      dst[3 * x + 1] = clip8(s1);
      dst[3 * x + 2] = clip8(s2);
    }
  }
}

// The taps' ny output rows of `width` pixels: in(row r) is at in + (r - in_y0) * in_stride.
void pass_vertical(const uint8_t *in, ptrdiff_t in_stride, int in_y0, int width, const Preprocess::Taps &t,
                   int ny, uint8_t *out, ptrdiff_t out_stride) {
  for (int y = 0; y < ny; ++y) {
    int first = t.first[y] - in_y0, count = t.count[y];
    const int32_t *k = &t.k[size_t(y) * t.ksize];
    uint8_t *dst = out + y * out_stride;
    for (int x = 0; x < width * 3; ++x) {
      int s = 1 << (kPrecisionBits - 1);
      for (int i = 0; i < count; ++i) s += in[ptrdiff_t(first + i) * in_stride + x] * k[i];
      dst[x] = clip8(s);
    }
  }
}

// Python's round() of n / 2 (half to even), as the crop is centered; 0 for n = -1 (round(-0.5) == 0).
int half_to_even(int64_t n) {
  int64_t half = n / 2;
  return int((n % 2 != 0 && half % 2 != 0) ? half + 1 : half);
}

bool is_jpeg(const unsigned char *magic, size_t got) {
  return got >= 3 && magic[0] == 0xFF && magic[1] == 0xD8 && magic[2] == 0xFF;
}

}  // namespace

ImageLimits &image_limits() {
  static ImageLimits limits;
  return limits;
}

void decode_image(FILE *file, const std::string &name, DecodedImage &out) {
  unsigned char magic[8] = {0};
  size_t got = std::fread(magic, 1, sizeof(magic), file);
  std::rewind(file);
  std::string failure;
  if (is_jpeg(magic, got)) failure = decode_jpeg(file, out);
  else if (got == 8 && png_sig_cmp(magic, 0, 8) == 0) failure = decode_png(file, out);
  else failure = "cannot identify image file (not a JPEG or PNG)";
  if (!failure.empty()) throw Error("cannot read image " + name + ": " + failure);
  if (out.width < 1 || out.height < 1) throw Error("cannot read image " + name + ": empty image");
}

void decode_image(const std::string &path, DecodedImage &out) {
  FILE *file = std::fopen(path.c_str(), "rb");
  if (!file) throw Error("cannot read image " + path + ": " + std::strerror(errno));
  try {
    decode_image(file, path, out);
  } catch (...) {
    std::fclose(file);
    throw;
  }
  std::fclose(file);
}

void Preprocess::configure(int size_px, int resize_px, const float mean_in[3], const float std_in[3],
                           const std::string &interpolation, const std::string &dtype) {
  if (size_px < 1 || size_px > 4096 || resize_px < size_px || resize_px > 65536)
    throw Error("input size " + std::to_string(size_px) + " resized from " + std::to_string(resize_px) +
                " is not a crop of 1..4096 pixels from a resize at least as large");
  if (interpolation != "bicubic" && interpolation != "bilinear")
    throw Error("interpolation '" + interpolation + "' is not bicubic or bilinear");
  if (dtype != "float32" && dtype != "uint8") throw Error("dtype '" + dtype + "' is not float32 or uint8");
  for (int c = 0; c < 3; ++c)
    if (!(std::isfinite(mean_in[c]) && std::isfinite(std_in[c]) && std_in[c] != 0.0f))
      throw Error("mean / std are not finite numbers with a non-zero std");
  size = size_px, resize = resize_px, bicubic = interpolation == "bicubic", raw_uint8 = dtype == "uint8";
  std::copy(mean_in, mean_in + 3, mean);
  std::copy(std_in, std_in + 3, std);
}

void Preprocess::apply(const Pixels &image, void *out) {
  const int64_t w = image.width, h = image.height, s = size;
  if (w < 1 || h < 1 || (image.stride < 0 ? -image.stride : image.stride) < w * 3)
    throw Error("image of " + std::to_string(w) + "x" + std::to_string(h) + " pixels with a row stride of " +
                std::to_string(image.stride) + " bytes is not an H x W x 3 image");
  double scale = double(resize) / double(std::min(w, h));
  double resized_w = w <= h ? resize : double(w) * scale, resized_h = w <= h ? double(h) * scale : resize;
  if (resized_w > double(kMaxResized) || resized_h > double(kMaxResized))
    throw Error("image of " + std::to_string(w) + "x" + std::to_string(h) + " pixels is too elongated to resize");
  const int out_w = int(resized_w), out_h = int(resized_h);
  const int left = half_to_even(int64_t(out_w) - s), top = half_to_even(int64_t(out_h) - s);
  // Crop pixels inside the resized image (one row / column short when the resize rounds down): the rest is 0.
  const int nx = int(std::min<int64_t>(s, out_w - left)), ny = int(std::min<int64_t>(s, out_h - top));
  if (nx < 1 || ny < 1)
    throw Error("image of " + std::to_string(w) + "x" + std::to_string(h) + " pixels resizes to nothing");
  const bool need_h = out_w != w, need_v = out_h != h;
  // Resample.c runs the vertical pass first when the height shrinks more than twice the width does.
  const bool horizontal_first = !((h - out_h) > 0 && (h - out_h) > (w - out_w) * 2);
  if (need_h) compute_taps(int(w), out_w, bicubic, left, nx, horizontal);
  if (need_v) compute_taps(int(h), out_h, bicubic, top, ny, vertical);
  // Only the pixels the crop keeps are computed; each is what Pillow computes for it.
  const uint8_t *crop;
  ptrdiff_t crop_stride;
  const ptrdiff_t row = ptrdiff_t(nx) * 3;
  pass2.resize(size_t(nx) * ny * 3);
  if (horizontal_first) {
    int r0 = need_v ? vertical.first[0] : top;
    int r1 = need_v ? vertical.first[ny - 1] + vertical.count[ny - 1] : top + ny;
    const uint8_t *src = image.data + r0 * image.stride;
    ptrdiff_t src_stride = image.stride;
    int src_x0 = 0;
    if (need_h) {
      pass1.resize(size_t(r1 - r0) * row);
      pass_horizontal(src, image.stride, 0, r1 - r0, horizontal, nx, pass1.data(), row);
      src = pass1.data(), src_stride = row, src_x0 = left;
    }
    const uint8_t *at_left = src + ptrdiff_t(left - src_x0) * 3;
    if (need_v) {
      pass_vertical(at_left, src_stride, r0, nx, vertical, ny, pass2.data(), row);
      crop = pass2.data(), crop_stride = row;
    } else {
      crop = at_left + (top - r0) * src_stride, crop_stride = src_stride;
    }
  } else {  // need_v holds here
    int c0 = need_h ? horizontal.first[0] : left;
    int c1 = need_h ? horizontal.first[nx - 1] + horizontal.count[nx - 1] : left + nx;
    const ptrdiff_t span = ptrdiff_t(c1 - c0) * 3;
    pass1.resize(size_t(ny) * span);
    pass_vertical(image.data + ptrdiff_t(c0) * 3, image.stride, 0, c1 - c0, vertical, ny, pass1.data(), span);
    if (need_h) {
      pass_horizontal(pass1.data(), span, c0, ny, horizontal, nx, pass2.data(), row);
      crop = pass2.data(), crop_stride = row;
    } else {
      crop = pass1.data() + ptrdiff_t(left - c0) * 3, crop_stride = span;
    }
  }
  const size_t plane = size_t(s) * s;
  for (int c = 0; c < 3; ++c) {
    const int channel = image.bgr ? 2 - c : c;
    // numpy's float32 arithmetic of the reference: (p - mean * 255) * (1 / (std * 255)).
    const float m = mean[c] * 255.0f, inv = 1.0f / (std[c] * 255.0f);
    for (int y = 0; y < s; ++y) {
      const int n = y < ny ? nx : 0;
      const uint8_t *src = n ? crop + y * crop_stride + channel : crop;
      if (raw_uint8) {
        uint8_t *dst = static_cast<uint8_t *>(out) + c * plane + size_t(y) * s;
        for (int x = 0; x < n; ++x) dst[x] = src[3 * x];
        std::fill(dst + n, dst + s, uint8_t(0));
      } else {
        float *dst = static_cast<float *>(out) + c * plane + size_t(y) * s;
        for (int x = 0; x < n; ++x) dst[x] = (float(src[3 * x]) - m) * inv;
        std::fill(dst + n, dst + s, (0.0f - m) * inv);
      }
    }
  }
}

}  // namespace edgevit
