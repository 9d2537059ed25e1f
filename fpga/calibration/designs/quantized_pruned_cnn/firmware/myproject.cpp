#include <iostream>

#include "myproject.h"
#include "parameters.h"


void myproject(
    hls::stream<input_t> &input_layer,
    hls::stream<result_t> &layer19_out
) {

    // hls-fpga-machine-learning insert IO
    #pragma HLS INTERFACE axis port=input_layer,layer19_out 
    #pragma HLS DATAFLOW

    // hls-fpga-machine-learning insert load weights
#ifndef __SYNTHESIS__
    static bool loaded_weights = false;
    if (!loaded_weights) {
        nnet::load_weights_from_txt<fused_convbn_0_weight_t, 432>(w2, "w2.txt");
        nnet::load_weights_from_txt<fused_convbn_0_bias_t, 16>(b2, "b2.txt");
        nnet::load_weights_from_txt<fused_convbn_1_weight_t, 2304>(w5, "w5.txt");
        nnet::load_weights_from_txt<fused_convbn_1_bias_t, 16>(b5, "b5.txt");
        nnet::load_weights_from_txt<fused_convbn_2_weight_t, 3456>(w8, "w8.txt");
        nnet::load_weights_from_txt<fused_convbn_2_bias_t, 24>(b8, "b8.txt");
        nnet::load_weights_from_txt<dense_0_weight_t, 4032>(w12, "w12.txt");
        nnet::load_weights_from_txt<bias12_t, 42>(b12, "b12.txt");
        nnet::load_weights_from_txt<bn_dense_0_scale_t, 42>(s13, "s13.txt");
        nnet::load_weights_from_txt<bn_dense_0_bias_t, 42>(b13, "b13.txt");
        nnet::load_weights_from_txt<dense_1_weight_t, 2688>(w15, "w15.txt");
        nnet::load_weights_from_txt<bias15_t, 64>(b15, "b15.txt");
        nnet::load_weights_from_txt<bn_dense_1_scale_t, 64>(s16, "s16.txt");
        nnet::load_weights_from_txt<bn_dense_1_bias_t, 64>(b16, "b16.txt");
        nnet::load_weights_from_txt<output_dense_weight_t, 640>(w18, "w18.txt");
        nnet::load_weights_from_txt<output_dense_bias_t, 10>(b18, "b18.txt");
        loaded_weights = true;    }
#endif
    // ****************************************
    // NETWORK INSTANTIATION
    // ****************************************

    // hls-fpga-machine-learning insert layers

    hls::stream<layer2_t> layer2_out("layer2_out");
    #pragma HLS STREAM variable=layer2_out depth=900

    hls::stream<layer3_t> layer3_out("layer3_out");
    #pragma HLS STREAM variable=layer3_out depth=900

    hls::stream<layer4_t> layer4_out("layer4_out");
    #pragma HLS STREAM variable=layer4_out depth=225

    hls::stream<layer5_t> layer5_out("layer5_out");
    #pragma HLS STREAM variable=layer5_out depth=169

    hls::stream<layer6_t> layer6_out("layer6_out");
    #pragma HLS STREAM variable=layer6_out depth=169

    hls::stream<layer7_t> layer7_out("layer7_out");
    #pragma HLS STREAM variable=layer7_out depth=36

    hls::stream<layer8_t> layer8_out("layer8_out");
    #pragma HLS STREAM variable=layer8_out depth=16

    hls::stream<layer9_t> layer9_out("layer9_out");
    #pragma HLS STREAM variable=layer9_out depth=16

    hls::stream<layer10_t> layer10_out("layer10_out");
    #pragma HLS STREAM variable=layer10_out depth=4

    auto& layer11_out = layer10_out;
    hls::stream<layer12_t> layer12_out("layer12_out");
    #pragma HLS STREAM variable=layer12_out depth=1

    hls::stream<layer13_t> layer13_out("layer13_out");
    #pragma HLS STREAM variable=layer13_out depth=1

    hls::stream<layer14_t> layer14_out("layer14_out");
    #pragma HLS STREAM variable=layer14_out depth=1

    hls::stream<layer15_t> layer15_out("layer15_out");
    #pragma HLS STREAM variable=layer15_out depth=1

    hls::stream<layer16_t> layer16_out("layer16_out");
    #pragma HLS STREAM variable=layer16_out depth=1

    hls::stream<layer17_t> layer17_out("layer17_out");
    #pragma HLS STREAM variable=layer17_out depth=1

    hls::stream<layer18_t> layer18_out("layer18_out");
    #pragma HLS STREAM variable=layer18_out depth=1

    nnet::conv_2d_cl<input_t, layer2_t, config2>(input_layer, layer2_out, w2, b2); // fused_convbn_0

    nnet::relu<layer2_t, layer3_t, relu_config3>(layer2_out, layer3_out); // conv_act_0

    nnet::pooling2d_cl<layer3_t, layer4_t, config4>(layer3_out, layer4_out); // pool_0

    nnet::conv_2d_cl<layer4_t, layer5_t, config5>(layer4_out, layer5_out, w5, b5); // fused_convbn_1

    nnet::relu<layer5_t, layer6_t, relu_config6>(layer5_out, layer6_out); // conv_act_1

    nnet::pooling2d_cl<layer6_t, layer7_t, config7>(layer6_out, layer7_out); // pool_1

    nnet::conv_2d_cl<layer7_t, layer8_t, config8>(layer7_out, layer8_out, w8, b8); // fused_convbn_2

    nnet::relu<layer8_t, layer9_t, relu_config9>(layer8_out, layer9_out); // conv_act_2

    nnet::pooling2d_cl<layer9_t, layer10_t, config10>(layer9_out, layer10_out); // pool_2

    nnet::dense<layer10_t, layer12_t, config12>(layer11_out, layer12_out, w12, b12); // dense_0

    nnet::normalize<layer12_t, layer13_t, config13>(layer12_out, layer13_out, s13, b13); // bn_dense_0

    nnet::relu<layer13_t, layer14_t, relu_config14>(layer13_out, layer14_out); // dense_act_0

    nnet::dense<layer14_t, layer15_t, config15>(layer14_out, layer15_out, w15, b15); // dense_1

    nnet::normalize<layer15_t, layer16_t, config16>(layer15_out, layer16_out, s16, b16); // bn_dense_1

    nnet::relu<layer16_t, layer17_t, relu_config17>(layer16_out, layer17_out); // dense_act_1

    nnet::dense<layer17_t, layer18_t, config18>(layer17_out, layer18_out, w18, b18); // output_dense

    nnet::softmax<layer18_t, result_t, softmax_config19>(layer18_out, layer19_out); // output_softmax

}

