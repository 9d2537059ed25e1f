#ifndef DEFINES_H_
#define DEFINES_H_

#include "ap_fixed.h"
#include "ap_int.h"
#include "nnet_utils/nnet_types.h"
#include <array>
#include <cstddef>
#include <cstdio>
#include <tuple>
#include <tuple>


// hls-fpga-machine-learning insert numbers

// hls-fpga-machine-learning insert layer-precision
typedef nnet::array<ap_fixed<16,6>, 3*1> input_t;
typedef ap_fixed<16,6> fused_convbn_0_accum_t;
typedef nnet::array<ap_fixed<16,6>, 16*1> layer2_t;
typedef ap_fixed<6,1> fused_convbn_0_weight_t;
typedef ap_fixed<6,1> fused_convbn_0_bias_t;
typedef nnet::array<ap_fixed<6,1>, 16*1> layer3_t;
typedef ap_fixed<18,8> conv_act_0_table_t;
typedef ap_fixed<16,6> pool_0_accum_t;
typedef nnet::array<ap_fixed<16,6>, 16*1> layer4_t;
typedef ap_fixed<16,6> fused_convbn_1_accum_t;
typedef nnet::array<ap_fixed<16,6>, 16*1> layer5_t;
typedef ap_fixed<6,1> fused_convbn_1_weight_t;
typedef ap_fixed<6,1> fused_convbn_1_bias_t;
typedef nnet::array<ap_fixed<6,1>, 16*1> layer6_t;
typedef ap_fixed<18,8> conv_act_1_table_t;
typedef ap_fixed<16,6> pool_1_accum_t;
typedef nnet::array<ap_fixed<16,6>, 16*1> layer7_t;
typedef ap_fixed<16,6> fused_convbn_2_accum_t;
typedef nnet::array<ap_fixed<16,6>, 24*1> layer8_t;
typedef ap_fixed<6,1> fused_convbn_2_weight_t;
typedef ap_fixed<6,1> fused_convbn_2_bias_t;
typedef nnet::array<ap_fixed<6,1>, 24*1> layer9_t;
typedef ap_fixed<18,8> conv_act_2_table_t;
typedef ap_fixed<16,6> pool_2_accum_t;
typedef nnet::array<ap_fixed<16,6>, 24*1> layer10_t;
typedef ap_fixed<16,6> dense_0_accum_t;
typedef nnet::array<ap_fixed<16,6>, 42*1> layer12_t;
typedef ap_fixed<6,1> dense_0_weight_t;
typedef ap_uint<1> bias12_t;
typedef ap_uint<1> layer12_index;
typedef nnet::array<ap_fixed<16,6>, 42*1> layer13_t;
typedef ap_fixed<16,6> bn_dense_0_scale_t;
typedef ap_fixed<16,6> bn_dense_0_bias_t;
typedef nnet::array<ap_fixed<6,1>, 42*1> layer14_t;
typedef ap_fixed<18,8> dense_act_0_table_t;
typedef ap_fixed<16,6> dense_1_accum_t;
typedef nnet::array<ap_fixed<16,6>, 64*1> layer15_t;
typedef ap_fixed<6,1> dense_1_weight_t;
typedef ap_uint<1> bias15_t;
typedef ap_uint<1> layer15_index;
typedef nnet::array<ap_fixed<16,6>, 64*1> layer16_t;
typedef ap_fixed<16,6> bn_dense_1_scale_t;
typedef ap_fixed<16,6> bn_dense_1_bias_t;
typedef nnet::array<ap_fixed<6,1>, 64*1> layer17_t;
typedef ap_fixed<18,8> dense_act_1_table_t;
typedef ap_fixed<16,6> output_dense_accum_t;
typedef nnet::array<ap_fixed<16,6,AP_RND,AP_SAT,0>, 10*1> layer18_t;
typedef ap_fixed<16,6> output_dense_weight_t;
typedef ap_fixed<16,6> output_dense_bias_t;
typedef ap_uint<1> layer18_index;
typedef ap_fixed<18,8,AP_RND,AP_SAT,0> output_softmax_accum_t;
typedef nnet::array<ap_fixed<16,6>, 10*1> result_t;
typedef ap_fixed<18,8> output_softmax_table_t;
typedef ap_fixed<18,8,AP_RND,AP_SAT,0> output_softmax_exp_table_t;
typedef ap_fixed<18,8,AP_RND,AP_SAT,0> output_softmax_inv_table_t;
typedef ap_fixed<18,8,AP_RND,AP_SAT,0> output_softmax_inv_inp_t;

// hls-fpga-machine-learning insert emulator-defines


#endif
