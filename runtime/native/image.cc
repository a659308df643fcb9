// Image file -> RGB (libjpeg-turbo, libpng) and RGB -> model input, bit for bit what
// runtime/preprocess.py gets from Pillow: Image.open(...).convert("RGB"), resize of the short side
// with Pillow's resampling (libImaging/Resample.c), center crop, raw CHW uint8 or normalized float32.
#include <csetjmp>
#include <cmath>
#include <cstdio>
#include <cerrno>
#include <cstring>

#include <jpeglib.h>
#include <jerror.h>
#include <png.h>

#include "internal.h"

namespace edgevit {
namespace {

// ---- decoding -------------------------------------------------------------------------------

struct JpegErrors {
  jpeg_error_mgr mgr;
  jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
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
  png_read_info(png, info);
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

// precompute_coeffs + normalize_coeffs_8bpc of Resample.c for the box [0, in_size].
void compute_taps(int in_size, int out_size, bool use_bicubic, Preprocess::Taps &t) {
  double (*filter)(double) = use_bicubic ? bicubic : bilinear;
  double scale = double(float(in_size) - 0.0f) / out_size;
  double filterscale = scale < 1.0 ? 1.0 : scale;
  double support = (use_bicubic ? 2.0 : 1.0) * filterscale;
  t.ksize = int(std::ceil(support)) * 2 + 1;
  t.first.resize(out_size);
  t.count.resize(out_size);
  t.weights.assign(size_t(out_size) * t.ksize, 0.0);
  t.k.resize(t.weights.size());
  double inv_filterscale = 1.0 / filterscale;
  for (int xx = 0; xx < out_size; ++xx) {
    double center = 0.0f + (xx + 0.5) * scale;
    int xmin = std::max(0, int(center - support + 0.5));
    int xmax = std::min(in_size, int(center + support + 0.5)) - xmin;
    double *k = &t.weights[size_t(xx) * t.ksize];
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      k[x] = filter((x + xmin - center + 0.5) * inv_filterscale);
      ww += k[x];
    }
    if (ww != 0.0)
      for (int x = 0; x < xmax; ++x) k[x] /= ww;
    t.first[xx] = xmin;
    t.count[xx] = xmax;
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

// Output columns [x0, x0 + nx) of `rows` rows: in(row, column c) is at in + row * in_stride + (c - in_x0) * 3.
void pass_horizontal(const uint8_t *in, int in_stride, int in_x0, int rows, const Preprocess::Taps &t,
                     int x0, int nx, uint8_t *out, int out_stride) {
  for (int y = 0; y < rows; ++y) {
    const uint8_t *line = in + size_t(y) * in_stride;
    uint8_t *dst = out + size_t(y) * out_stride;
    for (int x = 0; x < nx; ++x) {
      int first = t.first[x0 + x] - in_x0, count = t.count[x0 + x];
      const int32_t *k = &t.k[size_t(x0 + x) * t.ksize];
      int s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
      for (int i = 0; i < count; ++i) {
        const uint8_t *p = line + (first + i) * 3;
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

// Output rows [y0, y0 + ny) of `width` pixels: in(row r) is at in + (r - in_y0) * in_stride.
void pass_vertical(const uint8_t *in, int in_stride, int in_y0, int width, const Preprocess::Taps &t,
                   int y0, int ny, uint8_t *out, int out_stride) {
  for (int y = 0; y < ny; ++y) {
    int first = t.first[y0 + y] - in_y0, count = t.count[y0 + y];
    const int32_t *k = &t.k[size_t(y0 + y) * t.ksize];
    uint8_t *dst = out + size_t(y) * out_stride;
    for (int x = 0; x < width * 3; ++x) {
      int s = 1 << (kPrecisionBits - 1);
      for (int i = 0; i < count; ++i) s += in[size_t(first + i) * in_stride + x] * k[i];
      dst[x] = clip8(s);
    }
  }
}

// Python's round() of n / 2 (half to even), as preprocess.py centers the crop.
int half_to_even(int n) {
  int half = n / 2;
  return (n % 2 != 0 && half % 2 != 0) ? half + 1 : half;
}

}  // namespace

void decode_image(const std::string &path, DecodedImage &out) {
  FILE *file = std::fopen(path.c_str(), "rb");
  if (!file) throw Error("cannot read image " + path + ": " + std::strerror(errno));
  unsigned char magic[8] = {0};
  size_t got = std::fread(magic, 1, sizeof(magic), file);
  std::rewind(file);
  std::string failure;
  if (got >= 3 && magic[0] == 0xFF && magic[1] == 0xD8 && magic[2] == 0xFF) {
    failure = decode_jpeg(file, out);
  } else if (got == 8 && png_sig_cmp(magic, 0, 8) == 0) {
    failure = decode_png(file, out);
  } else {
    failure = "cannot identify image file (not a JPEG or PNG)";
  }
  std::fclose(file);
  if (!failure.empty()) throw Error("cannot read image " + path + ": " + failure);
  if (out.width < 1 || out.height < 1) throw Error("cannot read image " + path + ": empty image");
}

void Preprocess::apply(const Rgb &image, void *out) {
  if (image.width < 1 || image.height < 1 || image.stride < image.width * 3)
    throw Error("image of " + std::to_string(image.width) + "x" + std::to_string(image.height) +
                " pixels with a row stride of " + std::to_string(image.stride) + " bytes is not an RGB image");
  const int w = image.width, h = image.height, s = size;
  double scale = double(resize) / std::min(w, h);
  int out_w = w <= h ? resize : int(w * scale), out_h = w <= h ? int(h * scale) : resize;
  int left = half_to_even(out_w - s), top = half_to_even(out_h - s);
  bool need_h = out_w != w, need_v = out_h != h;
  // Resample.c runs the vertical pass first when the height shrinks more than twice the width does.
  bool horizontal_first = !((h - out_h) > 0 && (h - out_h) > (w - out_w) * 2);
  if (need_h) compute_taps(w, out_w, bicubic, horizontal);
  if (need_v) compute_taps(h, out_h, bicubic, vertical);
  // Only the pixels the crop keeps are computed; each is what Pillow computes for it.
  const uint8_t *crop;
  int crop_stride;
  pass2.resize(size_t(s) * s * 3);
  if (horizontal_first) {
    int r0 = need_v ? vertical.first[top] : top;
    int r1 = need_v ? vertical.first[top + s - 1] + vertical.count[top + s - 1] : top + s;
    const uint8_t *src = image.data + size_t(r0) * image.stride;
    int src_stride = image.stride, src_x0 = 0;
    if (need_h) {
      pass1.resize(size_t(r1 - r0) * s * 3);
      pass_horizontal(src, image.stride, 0, r1 - r0, horizontal, left, s, pass1.data(), s * 3);
      src = pass1.data(), src_stride = s * 3, src_x0 = left;
    }
    const uint8_t *at_left = src + (left - src_x0) * 3;
    if (need_v) {
      pass_vertical(at_left, src_stride, r0, s, vertical, top, s, pass2.data(), s * 3);
      crop = pass2.data(), crop_stride = s * 3;
    } else {
      crop = at_left + size_t(top - r0) * src_stride, crop_stride = src_stride;
    }
  } else {  // need_v holds here
    int c0 = need_h ? horizontal.first[left] : left;
    int c1 = need_h ? horizontal.first[left + s - 1] + horizontal.count[left + s - 1] : left + s;
    pass1.resize(size_t(s) * (c1 - c0) * 3);
    pass_vertical(image.data + c0 * 3, image.stride, 0, c1 - c0, vertical, top, s, pass1.data(), (c1 - c0) * 3);
    if (need_h) {
      pass_horizontal(pass1.data(), (c1 - c0) * 3, c0, s, horizontal, left, s, pass2.data(), s * 3);
      crop = pass2.data(), crop_stride = s * 3;
    } else {
      crop = pass1.data() + (left - c0) * 3, crop_stride = (c1 - c0) * 3;
    }
  }
  const size_t plane = size_t(s) * s;
  for (int c = 0; c < 3; ++c) {
    // numpy's float32 arithmetic in preprocess.py: (p - mean * 255) * (1 / (std * 255)).
    const float m = mean[c] * 255.0f, inv = 1.0f / (std[c] * 255.0f);
    for (int y = 0; y < s; ++y) {
      const uint8_t *row = crop + size_t(y) * crop_stride + c;
      if (raw_uint8) {
        uint8_t *dst = static_cast<uint8_t *>(out) + c * plane + size_t(y) * s;
        for (int x = 0; x < s; ++x) dst[x] = row[3 * x];
      } else {
        float *dst = static_cast<float *>(out) + c * plane + size_t(y) * s;
        for (int x = 0; x < s; ++x) dst[x] = (float(row[3 * x]) - m) * inv;
      }
    }
  }
}

}  // namespace edgevit
