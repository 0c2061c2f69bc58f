// Stand-in (lever-xreg tests): the option parser text the adapter's contract checks. Not XReg code.
#pragma once
#include <string>
enum Kind { L2R_L2LOSS_SVC_DUAL=0, L2R_LR_DUAL, L2R_L2LOSS_SVC_PRIMAL, L2R_LR_PRIMAL };
struct Param {
    int num_thread, num_tree, start_tree, max_leaf, classifier_maxitr, beam_width;
    bool weighted, tail_classifier, per_label_predict;
    int classifier_kind, leaf_classifier_kind;
    float classifier_cost, classifier_eps, classifier_threshold;
    void parse(int argc, char* argv[]) {
        for (int i = 0; i + 1 < argc; i += 2) {
            std::string opt = argv[i], v = argv[i + 1];
            if (opt == "-T") num_thread = std::stoi(v);
            else if (opt == "-t") num_tree = std::stoi(v);
            else if (opt == "-s") start_tree = std::stoi(v);
            else if (opt == "-w") weighted = std::stoi(v);
            else if (opt == "-k") classifier_kind = std::stoi(v);
            else if (opt == "-kleaf") leaf_classifier_kind = std::stoi(v);
            else if (opt == "-c") classifier_cost = std::stof(v);
            else if (opt == "-m") max_leaf = std::stoi(v);
            else if (opt == "-n") classifier_maxitr = std::stoi(v);
            else if (opt == "-ecl") classifier_eps = std::stof(v);
            else if (opt == "-tcl") classifier_threshold = std::stof(v);
            else if (opt == "-r") tail_classifier = std::stoi(v);
            else if (opt == "-B") beam_width = std::stoi(v);
            else if (opt == "-p") per_label_predict = std::stoi(v);
        }
    }
};
